//! Providers of `substratus_core::Cloud`: one module per cloud. Provider SDK types never
//! cross the trait.
