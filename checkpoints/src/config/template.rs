//! Template binder (to be written).
