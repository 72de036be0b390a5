//! Keystroke-to-frame latency (key read → frame flushed), split by whether a reply was streaming;
//! written as one JSON line at exit when `TRITTER_LATENCY_LOG` is set (docs/TUI.md).

/// Keystroke-to-frame latencies (key read → frame flushed), split by whether a reply was streaming.
#[derive(Default)]
pub struct Latency {
    pub idle: Vec<f64>,
    pub streaming: Vec<f64>,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

impl Latency {
    pub fn report(mut self) -> String {
        let s = &mut self.streaming;
        let line = serde_json::json!({
            "keys_while_streaming": s.len(),
            "streaming_p50_ms": percentile(s, 0.5),
            "streaming_p95_ms": percentile(s, 0.95),
            "streaming_max_ms": percentile(s, 1.0),
            "keys_idle": self.idle.len(),
            "idle_p50_ms": percentile(&mut self.idle, 0.5),
        });
        line.to_string()
    }
}
