//! The learning-rate schedule: linear warm-up, then cosine decay to a floor.

/// The learning rate at `step` (0-based) for a peak rate `peak`.
///
/// Steps `0..warmup` rise linearly to `peak` (step 0 gets `peak / warmup`, never zero, so the
/// first step moves the model). After warm-up the rate follows half a cosine from `peak` down to
/// `min_ratio * peak` at `total`; past `total`, and when `total` is zero, it stays flat.
pub fn learning_rate(peak: f32, warmup: u32, total: u32, step: u32, min_ratio: f32) -> f32 {
    if step < warmup {
        return peak * (step + 1) as f32 / warmup as f32;
    }
    if total == 0 {
        return peak;
    }
    if step >= total || total <= warmup {
        return peak * min_ratio;
    }
    let progress = (step - warmup) as f32 / (total - warmup) as f32;
    let cosine = 0.5 * (1.0 + (std::f32::consts::PI * progress).cos());
    peak * (min_ratio + (1.0 - min_ratio) * cosine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_up_rises_linearly_to_the_peak() {
        assert!((learning_rate(1.0, 4, 0, 0, 0.1) - 0.25).abs() < 1e-7);
        assert!((learning_rate(1.0, 4, 0, 3, 0.1) - 1.0).abs() < 1e-7);
    }

    #[test]
    fn cosine_decays_to_the_floor() {
        let at = |s| learning_rate(2.0, 10, 110, s, 0.1);
        assert!((at(10) - 2.0).abs() < 1e-6);
        assert!((at(60) - (0.2 + 1.8 * 0.5)).abs() < 1e-5);
        assert!((at(110) - 0.2).abs() < 1e-6);
        assert!((at(500) - 0.2).abs() < 1e-6);
        assert!(at(30) > at(40) && at(40) > at(50));
    }

    #[test]
    fn zero_total_keeps_the_rate_constant() {
        assert_eq!(learning_rate(0.5, 0, 0, 1000, 0.1), 0.5);
    }
}
