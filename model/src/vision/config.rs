//! Vision configs with Hugging Face key names, so HF files load as they are and can be written
//! back: [`VisionConfig`] is `SiglipVisionConfig` (`config.json` of a `SiglipVisionModel`, or the
//! `vision_config` object of a full `SiglipConfig` / `Idefics3Config`), [`ProcessorConfig`] is
//! `SiglipImageProcessor` (`preprocessor_config.json`). Absent keys take transformers' defaults
//! (5.x: `SiglipVisionConfig` and `SiglipImageProcessor` class attributes); unknown keys are
//! ignored; every error names the key that was wrong.

use crate::error::{Error, Result};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::Path;

/// The MLP activation of the SigLIP encoder (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisionAct {
    /// `gelu_pytorch_tanh` (also `gelu_new`): `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    GeluTanh,
    /// `gelu`: the exact `0.5·x·(1 + erf(x/√2))`.
    Gelu,
}

impl VisionAct {
    /// The name transformers uses in `hidden_act`.
    pub fn hf_name(self) -> &'static str {
        match self {
            VisionAct::GeluTanh => "gelu_pytorch_tanh",
            VisionAct::Gelu => "gelu",
        }
    }

    fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "gelu_pytorch_tanh" | "gelu_new" => Ok(VisionAct::GeluTanh),
            "gelu" => Ok(VisionAct::Gelu),
            other => Err(format!(
                "unsupported activation `{other}` (expected gelu_pytorch_tanh or gelu)"
            )),
        }
    }
}

impl Serialize for VisionAct {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.hf_name())
    }
}

impl<'de> Deserialize<'de> for VisionAct {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        VisionAct::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// An HF size that may be written as `n` or `[n, n]` (`image_size`, `patch_size`).
fn square_size<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<usize, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        One(usize),
        Two(Vec<usize>),
    }
    match Size::deserialize(d)? {
        Size::One(n) => Ok(n),
        Size::Two(v) if v.len() == 2 && v[0] == v[1] => Ok(v[0]),
        Size::Two(v) => Err(serde::de::Error::custom(format!(
            "{v:?}: only square sizes (n or [n, n]) are supported"
        ))),
    }
}

/// `SiglipVisionConfig`: the dimensions of a SigLIP vision tower.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_intermediate")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    #[serde(default = "d_image", deserialize_with = "square_size")]
    pub image_size: usize,
    #[serde(default = "d_patch", deserialize_with = "square_size")]
    pub patch_size: usize,
    #[serde(default = "d_act")]
    pub hidden_act: VisionAct,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
}

fn d_hidden() -> usize {
    768
}
fn d_intermediate() -> usize {
    3072
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_channels() -> usize {
    3
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    16
}
fn d_act() -> VisionAct {
    VisionAct::GeluTanh
}
fn d_eps() -> f64 {
    1e-6
}

/// `key` must lie in `lo..=hi`.
fn check_range(key: &str, v: usize, lo: usize, hi: usize) -> Result<()> {
    if v < lo || v > hi {
        return Err(Error::config(key, format!("{v} is outside {lo}..={hi}")));
    }
    Ok(())
}

/// Parses a JSON text into `T`, naming the offending key in the error.
fn parse_json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        Error::config(&key, e.into_inner().to_string())
    })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|cause| Error::ConfigJson {
        path: path.to_path_buf(),
        cause,
    })
}

impl VisionConfig {
    /// `google/siglip-base-patch16-224`'s tower (ViT-B/16 at 224²: 196 patches of width 768).
    pub fn siglip_base_patch16_224() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 16,
            hidden_act: VisionAct::GeluTanh,
            layer_norm_eps: 1e-6,
        }
    }

    /// From a parsed `config.json`: a `SiglipVisionConfig`, or any config whose `vision_config`
    /// object is one (`SiglipConfig`, `Idefics3Config`). Validated.
    pub fn from_json_value(value: &serde_json::Value) -> Result<Self> {
        let obj = value
            .as_object()
            .ok_or_else(|| Error::config("<root>", "expected a JSON object"))?;
        let vision = match obj.get("vision_config") {
            Some(v @ serde_json::Value::Object(_)) => v.clone(),
            Some(serde_json::Value::Null) | None => value.clone(),
            Some(_) => return Err(Error::config("vision_config", "expected a JSON object")),
        };
        let cfg: VisionConfig = parse_json(vision)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// From `config.json` text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::config("<root>", format!("invalid JSON: {e}")))?;
        Self::from_json_value(&value)
    }

    /// From a `config.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json_value(&read_json(path)?)
    }

    /// The config as a `SiglipVisionModel` `config.json` (with `model_type` and `architectures`).
    pub fn to_hf_json(&self) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(self)
            .map_err(|e| Error::Invalid(format!("vision config: {e}")))?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("model_type".into(), "siglip_vision_model".into());
            obj.insert(
                "architectures".into(),
                serde_json::json!(["SiglipVisionModel"]),
            );
        }
        Ok(v)
    }

    /// Checks sizes and their relations; each error names the key.
    pub fn validate(&self) -> Result<()> {
        check_range("hidden_size", self.hidden_size, 1, 16384)?;
        check_range("intermediate_size", self.intermediate_size, 1, 131072)?;
        check_range("num_hidden_layers", self.num_hidden_layers, 1, 256)?;
        check_range("num_attention_heads", self.num_attention_heads, 1, 256)?;
        check_range("num_channels", self.num_channels, 1, 16)?;
        check_range("image_size", self.image_size, 1, 8192)?;
        check_range("patch_size", self.patch_size, 1, self.image_size)?;
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(Error::config(
                "num_attention_heads",
                format!(
                    "hidden_size {} is not divisible by {} heads",
                    self.hidden_size, self.num_attention_heads
                ),
            ));
        }
        if !self.image_size.is_multiple_of(self.patch_size) {
            return Err(Error::config(
                "patch_size",
                format!(
                    "image_size {} is not divisible by patch_size {}",
                    self.image_size, self.patch_size
                ),
            ));
        }
        let eps = self.layer_norm_eps;
        if !(eps.is_finite() && eps > 0.0 && eps < 1.0) {
            return Err(Error::config(
                "layer_norm_eps",
                format!("{eps} is not in (0, 1)"),
            ));
        }
        Ok(())
    }

    /// Patches per side (`image_size / patch_size`).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Patches per image, the tower's sequence length.
    pub fn num_patches(&self) -> usize {
        self.grid() * self.grid()
    }

    /// `hidden_size / num_attention_heads`.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

/// `size` of an image processor: the output height and width in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageSize {
    pub height: usize,
    pub width: usize,
}

/// A per-channel constant that HF lets a file write as one number or a list.
fn per_channel<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<f64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum PerChannel {
        One(f64),
        Many(Vec<f64>),
    }
    Ok(match PerChannel::deserialize(d)? {
        PerChannel::One(v) => vec![v; 3],
        PerChannel::Many(v) => v,
    })
}

/// PIL resampling filters Tritter can apply (`resample` codes of `PIL.Image.Resampling`).
pub const RESAMPLE_NEAREST: u32 = 0;
/// PIL `LANCZOS` (3 lobes).
pub const RESAMPLE_LANCZOS: u32 = 1;
/// PIL `BILINEAR` (triangle filter, widened when shrinking).
pub const RESAMPLE_BILINEAR: u32 = 2;
/// PIL `BICUBIC` (Keys cubic, a = -0.5, widened when shrinking).
pub const RESAMPLE_BICUBIC: u32 = 3;

/// `SiglipImageProcessor` (`preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessorConfig {
    #[serde(default = "d_size")]
    pub size: ImageSize,
    #[serde(default = "d_true")]
    pub do_resize: bool,
    #[serde(default = "d_resample")]
    pub resample: u32,
    #[serde(default = "d_true")]
    pub do_rescale: bool,
    #[serde(default = "d_rescale")]
    pub rescale_factor: f64,
    #[serde(default = "d_true")]
    pub do_normalize: bool,
    #[serde(default = "d_half", deserialize_with = "per_channel")]
    pub image_mean: Vec<f64>,
    #[serde(default = "d_half", deserialize_with = "per_channel")]
    pub image_std: Vec<f64>,
    #[serde(default = "d_true")]
    pub do_convert_rgb: bool,
}

fn d_size() -> ImageSize {
    ImageSize {
        height: 224,
        width: 224,
    }
}
fn d_true() -> bool {
    true
}
fn d_resample() -> u32 {
    RESAMPLE_BICUBIC
}
fn d_rescale() -> f64 {
    1.0 / 255.0
}
fn d_half() -> Vec<f64> {
    vec![0.5; 3]
}

impl Default for ProcessorConfig {
    /// `SiglipImageProcessor()`'s defaults: 224², bicubic, `x/255`, mean = std = 0.5.
    fn default() -> Self {
        Self {
            size: d_size(),
            do_resize: true,
            resample: d_resample(),
            do_rescale: true,
            rescale_factor: d_rescale(),
            do_normalize: true,
            image_mean: d_half(),
            image_std: d_half(),
            do_convert_rgb: true,
        }
    }
}

impl ProcessorConfig {
    /// The defaults with `size` set to the tower's `image_size` (square).
    pub fn for_vision(cfg: &VisionConfig) -> Self {
        Self {
            size: ImageSize {
                height: cfg.image_size,
                width: cfg.image_size,
            },
            ..Self::default()
        }
    }

    /// From a parsed `preprocessor_config.json`. Validated.
    pub fn from_json_value(value: &serde_json::Value) -> Result<Self> {
        if let Some(size) = value.get("size") {
            if size.get("height").is_none() || size.get("width").is_none() {
                return Err(Error::config(
                    "size",
                    format!("{size}: expected {{\"height\": H, \"width\": W}}"),
                ));
            }
        }
        if value.get("do_center_crop").and_then(|v| v.as_bool()) == Some(true) {
            return Err(Error::config(
                "do_center_crop",
                "center cropping is not supported",
            ));
        }
        let cfg: ProcessorConfig = parse_json(value.clone())?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// From `preprocessor_config.json` text.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| Error::config("<root>", format!("invalid JSON: {e}")))?;
        Self::from_json_value(&value)
    }

    /// From a `preprocessor_config.json` file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json_value(&read_json(path)?)
    }

    /// The config as HF writes `preprocessor_config.json` (with `image_processor_type`).
    pub fn to_hf_json(&self) -> Result<serde_json::Value> {
        let mut v = serde_json::to_value(self)
            .map_err(|e| Error::Invalid(format!("processor config: {e}")))?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("image_processor_type".into(), "SiglipImageProcessor".into());
        }
        Ok(v)
    }

    /// Checks sizes, the filter code and the normalisation constants; errors name the key.
    pub fn validate(&self) -> Result<()> {
        check_range("size.height", self.size.height, 1, 8192)?;
        check_range("size.width", self.size.width, 1, 8192)?;
        if self.resample > RESAMPLE_BICUBIC {
            return Err(Error::config(
                "resample",
                format!(
                    "{}: supported are 0 (nearest), 1 (lanczos), 2 (bilinear), 3 (bicubic)",
                    self.resample
                ),
            ));
        }
        let f = self.rescale_factor;
        if !(f.is_finite() && f > 0.0) {
            return Err(Error::config("rescale_factor", format!("{f} is not > 0")));
        }
        for (key, v) in [
            ("image_mean", &self.image_mean),
            ("image_std", &self.image_std),
        ] {
            if v.len() != 3 {
                return Err(Error::config(
                    key,
                    format!("{} values, expected 3 (RGB)", v.len()),
                ));
            }
            if v.iter().any(|x| !x.is_finite()) {
                return Err(Error::config(key, "values must be finite"));
            }
        }
        if self.image_std.contains(&0.0) {
            return Err(Error::config("image_std", "a channel's std is 0"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiny() -> serde_json::Value {
        json!({
            "model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 32, "patch_size": 4,
            "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "vision_use_head": true
        })
    }

    fn err_of(v: serde_json::Value) -> String {
        VisionConfig::from_json_value(&v).unwrap_err().to_string()
    }

    #[test]
    fn absent_keys_take_hf_defaults() {
        let cfg = VisionConfig::from_json_str("{}").unwrap();
        assert_eq!(cfg, VisionConfig::siglip_base_patch16_224());
        assert_eq!(cfg.num_patches(), 196);
        assert_eq!(cfg.head_dim(), 64);
        let p = ProcessorConfig::from_json_str("{}").unwrap();
        assert_eq!(p, ProcessorConfig::default());
        assert_eq!(p.resample, RESAMPLE_BICUBIC);
    }

    #[test]
    fn full_siglip_config_reads_vision_config_and_round_trips() {
        let full = json!({"model_type": "siglip", "text_config": {"hidden_size": 16},
                          "vision_config": tiny()});
        let cfg = VisionConfig::from_json_value(&full).unwrap();
        assert_eq!(
            (cfg.hidden_size, cfg.grid(), cfg.num_hidden_layers),
            (32, 8, 2)
        );
        let back = VisionConfig::from_json_value(&cfg.to_hf_json().unwrap()).unwrap();
        assert_eq!(back, cfg);
        assert_eq!(
            cfg.to_hf_json().unwrap()["model_type"],
            "siglip_vision_model"
        );
        let mut square = tiny();
        square["image_size"] = json!([32, 32]);
        square["hidden_act"] = json!("gelu");
        let c = VisionConfig::from_json_value(&square).unwrap();
        assert_eq!((c.image_size, c.hidden_act), (32, VisionAct::Gelu));
        let p = ProcessorConfig {
            resample: RESAMPLE_BILINEAR,
            ..ProcessorConfig::for_vision(&cfg)
        };
        let back = ProcessorConfig::from_json_value(&p.to_hf_json().unwrap()).unwrap();
        assert_eq!(back, p);
        assert_eq!(back.size.height, 32);
    }

    #[test]
    fn bad_vision_configs_name_the_key() {
        let cases: [(&str, serde_json::Value, &str); 8] = [
            ("num_attention_heads", json!(5), "not divisible"),
            ("patch_size", json!(5), "not divisible by patch_size"),
            ("hidden_size", json!(0), "outside"),
            ("num_hidden_layers", json!(100000), "outside"),
            ("hidden_act", json!("relu"), "unsupported activation"),
            ("image_size", json!([32, 16]), "square"),
            ("layer_norm_eps", json!(0.0), "not in (0, 1)"),
            ("patch_size", json!(64), "outside"),
        ];
        for (key, value, msg) in cases {
            let mut v = tiny();
            v[key] = value;
            let e = err_of(v);
            assert!(e.contains(key) && e.contains(msg), "{key}: {e}");
        }
        let e = err_of(json!({"vision_config": 3}));
        assert!(e.contains("vision_config"), "{e}");
    }

    #[test]
    fn bad_processor_configs_name_the_key() {
        let cases = [
            (json!({"resample": 4}), "resample"),
            (json!({"image_std": [0.5, 0.0, 0.5]}), "image_std"),
            (json!({"image_mean": [0.5, 0.5]}), "image_mean"),
            (json!({"size": {"shortest_edge": 224}}), "size"),
            (json!({"size": {"height": 0, "width": 3}}), "size.height"),
            (json!({"rescale_factor": -1.0}), "rescale_factor"),
            (json!({"do_center_crop": true}), "do_center_crop"),
            (json!({"do_resize": "yes"}), "do_resize"),
        ];
        for (v, key) in cases {
            let e = ProcessorConfig::from_json_value(&v)
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        let one = ProcessorConfig::from_json_value(&json!({"image_mean": 0.25})).unwrap();
        assert_eq!(one.image_mean, vec![0.25; 3]);
    }
}
