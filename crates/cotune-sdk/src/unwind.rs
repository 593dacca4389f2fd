//! What a caught panic said. Both the exported calls (which turn a panic into a `PluginError`)
//! and the trainer's checkpoint reader (burn panics on some malformed records) report it.

/// The message a panic carried (`panic!("...")` or `panic!("{x}")`), or a placeholder when its
/// payload is not a string.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}
