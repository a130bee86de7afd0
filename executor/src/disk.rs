//! Sandbox disk usage (in progress).
