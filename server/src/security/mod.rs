//! Who may connect (passwords, tokens), what they may do, and how hard
//! guessing is made for those who may not.

pub mod passwords;
pub mod permissions;
pub mod throttle;
pub mod tokens;

pub use throttle::LoginThrottle;
