//! The committed audio demo model (`assets/audio-demo/`, trained by `scripts/train-audio-demo.sh`
//! on synthetic DTMF clips) through the real binary: `-p --audio` transcribes held-out clips,
//! `tritter encode audio` writes the probe's tensors (codes that re-encode the same from the
//! written samples, a decoded clip), and a silent clip gets no clip-specific answer. Accuracy
//! over the whole held-out set is measured by the training run (`assets/audio-demo/eval.json`),
//! not here. The refusal test (a model without a codec) runs on its own clip.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/audio-demo")
}

fn tritter(args: &[&str]) -> Output {
    let cfg = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_tritter"))
        .args(args)
        .env("TRITTER_CONFIG_DIR", cfg.path())
        .env("TRITTER_DATA_DIR", cfg.path())
        .env_remove("TRITTER_TEST_ENGINE")
        .output()
        .unwrap()
}

/// The held-out examples committed with the model: (clip, its transcription).
fn examples() -> Vec<(PathBuf, String)> {
    let dir = demo().join("examples");
    std::fs::read_to_string(dir.join("answers.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let name = Path::new(v["audio"].as_str().unwrap())
                .file_name()
                .unwrap()
                .to_owned();
            (dir.join(name), v["text"].as_str().unwrap().to_string())
        })
        .collect()
}

fn ask(clip: &Path) -> String {
    let m = demo();
    let out = tritter(&[
        "--model",
        m.to_str().unwrap(),
        "-p",
        "what was said?",
        "--audio",
        clip.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// A 16-bit mono WAV of `samples` at `rate`.
fn write_wav(path: &Path, rate: u32, samples: &[i16]) {
    let data = samples.len() as u32 * 2;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes());
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        b.extend_from_slice(&s.to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn p_audio_transcribes_held_out_clips() {
    let ex = examples();
    assert!(ex.len() >= 4);
    let right = ex.iter().filter(|(clip, want)| ask(clip) == *want).count();
    assert!(right >= ex.len() - 1, "{right} of {} right", ex.len());
}

#[test]
fn a_silent_clip_is_not_transcribed_as_the_examples() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("silence.wav");
    write_wav(&p, 16_000, &[0; 16_000]);
    let silent = ask(&p);
    let ex = examples();
    let same = ex.iter().filter(|(_, want)| *want == silent).count();
    assert!(
        same < ex.len(),
        "every example got the silent clip's answer {silent:?}"
    );
}

#[test]
fn encode_audio_writes_the_probe_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("o.safetensors");
    let (clip, _) = &examples()[0];
    let m = demo();
    let o = tritter(&[
        "encode",
        "audio",
        "--model",
        m.to_str().unwrap(),
        "--audio",
        clip.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t = candle_core::safetensors::load(&out, &candle_core::Device::Cpu).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(m.join("audio/config.json")).unwrap())
            .unwrap();
    let hop: u64 = cfg["upsampling_ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .product();
    let s = t["samples"].dims()[0];
    assert_eq!(t["samples"].dims().len(), 1);
    let codes = t["codes"].dims().to_vec();
    assert_eq!(codes.len(), 2);
    assert_eq!(codes[1], s.div_ceil(hop as usize));
    assert_eq!(t["audio_values"].dims(), &[codes[1] * hop as usize]);
    // Re-encoding the written samples gives the same codes.
    let out2 = dir.path().join("o2.safetensors");
    let smp = dir.path().join("s.safetensors");
    candle_core::safetensors::save(
        &std::collections::HashMap::from([("samples".to_string(), t["samples"].clone())]),
        &smp,
    )
    .unwrap();
    let o = tritter(&[
        "encode",
        "audio",
        "--model",
        m.to_str().unwrap(),
        "--samples",
        smp.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t2 = candle_core::safetensors::load(&out2, &candle_core::Device::Cpu).unwrap();
    assert_eq!(
        t["codes"].to_vec2::<i64>().unwrap(),
        t2["codes"].to_vec2::<i64>().unwrap()
    );
}

#[test]
fn a_model_without_a_codec_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("tone.wav");
    let tone: Vec<i16> = (0..8000)
        .map(|i| ((i as f32 * 0.3).sin() * 8000.0) as i16)
        .collect();
    write_wav(&clip, 16_000, &tone);
    let vision = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/vision-demo");
    let o = tritter(&[
        "--model",
        vision.to_str().unwrap(),
        "-p",
        "what was said?",
        "--audio",
        clip.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("audio"), "{e}");
    let o = tritter(&[
        "encode",
        "audio",
        "--model",
        vision.to_str().unwrap(),
        "--audio",
        clip.to_str().unwrap(),
        "--out",
        "/dev/null",
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("takes no audio"), "{e}");
}
