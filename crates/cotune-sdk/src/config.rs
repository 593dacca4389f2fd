//! Checks of the configuration fields most architectures share, for
//! [`LanguageModel::validate`](crate::LanguageModel::validate).
//!
//! Each returns the first problem as a message that names the key and the value, so a plugin's
//! `validate` is a sequence of `?`-chained calls plus its own particular checks:
//!
//! ```
//! use cotune_sdk::config::{divisible, one_of, positive, positive_numbers};
//!
//! fn validate(width: usize, heads: usize, eps: f64, act: &str) -> Result<(), String> {
//!     positive(&[("width", width), ("heads", heads)])?;
//!     divisible(("width", width), ("heads", heads))?;
//!     one_of("activation", act, &["gelu", "relu"])?;
//!     positive_numbers(&[("eps", eps)])
//! }
//!
//! assert_eq!(validate(0, 4, 1e-5, "gelu").unwrap_err(), "`width` must be positive, got 0");
//! assert_eq!(
//!     validate(30, 4, 1e-5, "gelu").unwrap_err(),
//!     "`width` (30) must be divisible by `heads` (4)"
//! );
//! ```

/// Refuses the first size that is zero: ``"`key` must be positive, got 0"``.
pub fn positive(sizes: &[(&str, usize)]) -> Result<(), String> {
    match sizes.iter().find(|(_, v)| *v == 0) {
        Some((key, v)) => Err(format!("`{key}` must be positive, got {v}")),
        None => Ok(()),
    }
}

/// Refuses the first real that is not a finite positive number (zero, negative, NaN or
/// infinite): ``"`key` must be a positive number, got -1"``.
pub fn positive_numbers(reals: &[(&str, f64)]) -> Result<(), String> {
    match reals.iter().find(|(_, v)| !(v.is_finite() && *v > 0.0)) {
        Some((key, v)) => Err(format!("`{key}` must be a positive number, got {v}")),
        None => Ok(()),
    }
}

/// Refuses `value` unless `by` divides it (e.g. attention heads splitting the width):
/// ``"`hidden_size` (32) must be divisible by `num_attention_heads` (3)"``. Check that `by` is
/// positive first: zero divides only zero.
pub fn divisible((key, value): (&str, usize), (by_key, by): (&str, usize)) -> Result<(), String> {
    if value.is_multiple_of(by) {
        Ok(())
    } else {
        Err(format!(
            "`{key}` ({value}) must be divisible by `{by_key}` ({by})"
        ))
    }
}

/// Refuses `value` unless it is below `limit` (e.g. a token id below the vocabulary size):
/// ``"`decoder_start_token_id` (96) must be below `vocab_size` (96)"``.
pub fn below((key, value): (&str, usize), (limit_key, limit): (&str, usize)) -> Result<(), String> {
    if value < limit {
        Ok(())
    } else {
        Err(format!(
            "`{key}` ({value}) must be below `{limit_key}` ({limit})"
        ))
    }
}

/// Refuses a string that is none of `allowed`:
/// ``"`activation_function` must be \"gelu_new\" or \"gelu\", got \"relu\""``.
pub fn one_of(key: &str, value: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&value) {
        return Ok(());
    }
    let quoted: Vec<String> = allowed.iter().map(|a| format!("{a:?}")).collect();
    let choices = match quoted.split_last() {
        None => "nothing".to_string(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    };
    Err(format!("`{key}` must be {choices}, got {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_names_the_first_zero() {
        assert!(positive(&[("a", 1), ("b", 2)]).is_ok());
        assert!(positive(&[]).is_ok());
        assert_eq!(
            positive(&[("a", 1), ("b", 0), ("c", 0)]).unwrap_err(),
            "`b` must be positive, got 0"
        );
    }

    #[test]
    fn positive_numbers_refuse_zero_negative_and_non_finite() {
        assert!(positive_numbers(&[("eps", 1e-6), ("theta", 10_000.0)]).is_ok());
        for (v, shown) in [
            (0.0, "0"),
            (-1.0, "-1"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
        ] {
            assert_eq!(
                positive_numbers(&[("eps", 1.0), ("theta", v)]).unwrap_err(),
                format!("`theta` must be a positive number, got {shown}")
            );
        }
    }

    #[test]
    fn divisible_names_both_keys_and_values() {
        assert!(divisible(("hidden_size", 32), ("num_attention_heads", 4)).is_ok());
        assert_eq!(
            divisible(("hidden_size", 32), ("num_attention_heads", 3)).unwrap_err(),
            "`hidden_size` (32) must be divisible by `num_attention_heads` (3)"
        );
        assert!(divisible(("a", 0), ("b", 0)).is_ok());
        assert!(divisible(("a", 1), ("b", 0)).is_err());
    }

    #[test]
    fn below_names_both_keys_and_values() {
        assert!(below(("decoder_start_token_id", 0), ("vocab_size", 96)).is_ok());
        assert_eq!(
            below(("decoder_start_token_id", 96), ("vocab_size", 96)).unwrap_err(),
            "`decoder_start_token_id` (96) must be below `vocab_size` (96)"
        );
    }

    #[test]
    fn one_of_lists_the_choices_and_quotes_the_value() {
        assert!(one_of("act", "gelu", &["gelu_new", "gelu"]).is_ok());
        assert_eq!(
            one_of("activation_function", "relu", &["gelu_new", "gelu"]).unwrap_err(),
            r#"`activation_function` must be "gelu_new" or "gelu", got "relu""#
        );
        assert_eq!(
            one_of("k", "x", &["a", "b", "c"]).unwrap_err(),
            r#"`k` must be "a", "b" or "c", got "x""#
        );
        assert_eq!(
            one_of("k", "x", &["a"]).unwrap_err(),
            r#"`k` must be "a", got "x""#
        );
    }
}
