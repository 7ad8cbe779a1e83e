pub mod ballots;
pub mod internal;
pub mod receipts;
