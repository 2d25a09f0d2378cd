//! Tests of the derives through `annals-core`, as users write them, and the trybuild
//! cases proving that misuse fails with a clear compile error.

mod aggregate;
mod command;
mod event;
mod handlers;
mod ui;
