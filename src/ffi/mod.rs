//! The C ABI (see include/quantshift_core.h). Filled in by the C front-end work.
