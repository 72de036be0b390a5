//! `config.toml` in the platform config folder (or `$TRITTER_CONFIG_DIR`), and the platform data
//! folder for sessions (or `$TRITTER_DATA_DIR`). Unknown keys are errors that name the key, so a typo
//! never silently does nothing.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Overrides the config folder (tests, portable setups).
pub const CONFIG_DIR_VAR: &str = "TRITTER_CONFIG_DIR";
/// Overrides the data folder where sessions are saved.
pub const DATA_DIR_VAR: &str = "TRITTER_DATA_DIR";
/// Overrides the cache folder (measurements of this machine: `bench tune`'s choice).
pub const CACHE_DIR_VAR: &str = "TRITTER_CACHE_DIR";

/// The default of `latent_min_cosine` (see `engine::model::latent`; not calibrated on a
/// latent-trained model yet: the built-in model's fed-back states, which it was not trained on,
/// round to tokens at cosines of 0.45–0.64, so 0.2 flags only chains that drift from every token).
pub const DEFAULT_MIN_COSINE: f32 = 0.2;

/// The user's settings; every field has a default.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Theme name: a built-in one (dark, light, high-contrast) or `themes/NAME.toml` in the config folder.
    pub theme: String,
    /// Model directory; none means the built-in model.
    pub model: Option<PathBuf>,
    /// `cpu` or `cuda[:N]`.
    pub device: Option<String>,
    /// The longest reply, in tokens.
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: usize,
    /// Latent-reasoning mode at start: "on", "off" or "auto" (`true`/`false` mean on/off).
    pub latent: crate::engine::LatentMode,
    /// Latent mode's confidence signal: a chain whose weakest thought's nearest token has a
    /// lower cosine counts as degraded (auto then answers in token mode). 0 turns it off.
    pub latent_min_cosine: f32,
    /// Width of the code pane in percent of the screen (20–80).
    pub code_pane_percent: u16,
    /// Clipboard route for /copy: "auto" (system clipboard, OSC 52 over SSH/tmux or on failure),
    /// "system" or "osc52".
    pub clipboard: ClipboardMode,
    /// The repo map's share of the prompt, in tokens (at most half of what the message leaves);
    /// 0 turns the map off.
    pub repo_map_tokens: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClipboardMode {
    Auto,
    System,
    Osc52,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            theme: "dark".to_string(),
            model: None,
            device: None,
            max_new_tokens: 512,
            temperature: 0.7,
            top_p: 0.9,
            top_k: 40,
            latent: crate::engine::LatentMode::Off,
            latent_min_cosine: DEFAULT_MIN_COSINE,
            code_pane_percent: 50,
            clipboard: ClipboardMode::Auto,
            repo_map_tokens: 1024,
        }
    }
}

impl Config {
    /// Parses config text; `origin` names the file in errors.
    pub fn parse(origin: &str, text: &str) -> anyhow::Result<Self> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| {
                    format!(
                        " (line {})",
                        text[..s.start.min(text.len())].matches('\n').count() + 1
                    )
                })
                .unwrap_or_default();
            anyhow::anyhow!("config {origin}{line}: {}", e.message())
        })?;
        if !(20..=80).contains(&cfg.code_pane_percent) {
            anyhow::bail!(
                "config {origin}: `code_pane_percent` = {} is out of range 20..=80",
                cfg.code_pane_percent
            );
        }
        if cfg.max_new_tokens == 0 {
            anyhow::bail!("config {origin}: `max_new_tokens` must be at least 1");
        }
        if !(0.0..=5.0).contains(&cfg.temperature) {
            anyhow::bail!(
                "config {origin}: `temperature` = {} is out of range 0..=5",
                cfg.temperature
            );
        }
        if !(0.0..=1.0).contains(&cfg.top_p) || cfg.top_p == 0.0 {
            anyhow::bail!(
                "config {origin}: `top_p` = {} is out of range (0, 1]",
                cfg.top_p
            );
        }
        if !(0.0..=2.0).contains(&cfg.latent_min_cosine) {
            anyhow::bail!(
                "config {origin}: `latent_min_cosine` = {} is out of range 0..=2",
                cfg.latent_min_cosine
            );
        }
        Ok(cfg)
    }

    /// Loads `config.toml` from `dir`; a missing file gives the defaults.
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let path = dir.join("config.toml");
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&path.display().to_string(), &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => anyhow::bail!("cannot read config {}: {e}", path.display()),
        }
    }
}

/// The folder named by `var`, else the platform's one that `pick` takes from the project's
/// folders; `what` names its use in the error when neither exists.
fn folder(
    var: &str,
    pick: fn(&directories::ProjectDirs) -> &Path,
    what: &str,
) -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os(var) {
        return Ok(PathBuf::from(d));
    }
    directories::ProjectDirs::from("", "", "tritter")
        .map(|p| pick(&p).to_path_buf())
        .ok_or_else(|| anyhow::anyhow!("cannot find a home folder for {what}; set {var}"))
}

/// The config folder: `$TRITTER_CONFIG_DIR`, else the platform's (e.g. `~/.config/tritter`).
pub fn config_dir() -> anyhow::Result<PathBuf> {
    folder(CONFIG_DIR_VAR, |p| p.config_dir(), "the config")
}

/// The data folder: `$TRITTER_DATA_DIR`, else the platform's (e.g. `~/.local/share/tritter`).
pub fn data_dir() -> anyhow::Result<PathBuf> {
    folder(DATA_DIR_VAR, |p| p.data_dir(), "sessions")
}

/// The cache folder: `$TRITTER_CACHE_DIR`, else the platform's (e.g. `~/.cache/tritter`).
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    folder(CACHE_DIR_VAR, |p| p.cache_dir(), "the cache")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::LatentMode;

    #[test]
    fn empty_file_gives_defaults_and_fields_parse() {
        assert_eq!(Config::parse("t", "").unwrap(), Config::default());
        let c = Config::parse(
            "t",
            "theme = \"light\"\nlatent = true\nclipboard = \"osc52\"\n",
        )
        .unwrap();
        assert_eq!(c.theme, "light");
        assert_eq!(c.latent, LatentMode::On);
        assert_eq!(c.clipboard, ClipboardMode::Osc52);
        for (text, mode) in [
            ("latent = false", LatentMode::Off),
            ("latent = \"on\"", LatentMode::On),
            ("latent = \"off\"", LatentMode::Off),
            ("latent = \"auto\"", LatentMode::Auto),
        ] {
            assert_eq!(Config::parse("t", text).unwrap().latent, mode, "{text}");
        }
        let c = Config::parse("t", "latent_min_cosine = 1.5").unwrap();
        assert_eq!(c.latent_min_cosine, 1.5);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let e = Config::parse("t", "theme = \"dark\"\nthem = \"light\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `them`") && e.contains("line 2"),
            "{e}"
        );
        let e = Config::parse("t", "code_pane_percent = 95\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("code_pane_percent"), "{e}");
        let e = Config::parse("t", "clipboard = \"x11\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x11"), "{e}");
        let e = Config::parse("t", "latent = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("on, off or auto") && e.contains("sometimes"),
            "{e}"
        );
        let e = Config::parse("t", "latent_min_cosine = -0.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("latent_min_cosine"), "{e}");
    }

    #[test]
    fn missing_file_is_defaults_but_unreadable_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Config::load(dir.path()).unwrap(), Config::default());
        std::fs::create_dir(dir.path().join("config.toml")).unwrap();
        assert!(Config::load(dir.path()).is_err());
    }
}
