//! Status reports (in progress).
