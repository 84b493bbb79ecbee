//! Who may connect, and how hard guessing is made for those who may not.

pub mod passwords;
pub mod permissions;
pub mod throttle;

pub use throttle::LoginThrottle;
