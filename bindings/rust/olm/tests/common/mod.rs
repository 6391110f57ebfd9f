//! Helpers shared by the integration tests (`mod common;` in each test file).
use olm::ErrorCode;

/// The call failed with `code` and a message containing `needle`.
pub fn expect_err<T>(result: olm::Result<T>, code: ErrorCode, needle: &str) {
    match result {
        Ok(_) => panic!("expected an error with {needle:?}"),
        Err(e) => {
            assert_eq!(e.code, code, "{}", e.message);
            assert!(e.message.contains(needle), "{:?} does not contain {needle:?}", e.message);
        }
    }
}
