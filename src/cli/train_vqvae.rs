//! `tritter --train CONFIG` with `task = "vqvae"` (placeholder until the VQ trainer lands).
use std::path::Path;

pub fn train(config: &Path, _overrides: &[String], _device: Option<&str>) -> anyhow::Result<()> {
    anyhow::bail!("{}: task = \"vqvae\" is not built yet", config.display())
}
