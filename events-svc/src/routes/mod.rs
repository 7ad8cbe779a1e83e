pub mod elections;
pub mod ops;
pub mod tokens;
