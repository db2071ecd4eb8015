//! The PyO3 module `quantshift_core._quantshift_core`. Filled in by the Python front-end work.
