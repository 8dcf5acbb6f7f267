//! mmm monitor.
