//! Carries out the app's jobs (`app::effect::Job`): decoding attachments, reading and writing
//! session files, and building the repo map. The event loop runs each on its own thread and feeds the `Outcome` back to
//! `App::update`, so a 50 MB attachment or a slow disk never holds up a keystroke; tests call
//! [`run`] directly.

use crate::tui::app::effect::{Job, Outcome, PREVIEW_MAX};

/// Does the work of `job` and reports it.
pub fn run(job: Job) -> Outcome {
    let line = |e: anyhow::Error| format!("{e:#}");
    match job {
        Job::LoadImage(path) => Outcome::Image(
            crate::attach::load_image(&path)
                .map(|(att, img)| {
                    let preview = if img.width().max(img.height()) > PREVIEW_MAX {
                        img.thumbnail(PREVIEW_MAX, PREVIEW_MAX)
                    } else {
                        img
                    };
                    (att, preview)
                })
                .map_err(line),
        ),
        Job::LoadAudio(path) => Outcome::Audio(
            crate::attach::load_audio(&path)
                .map(|att| {
                    let wave = match att.data.as_deref() {
                        Some(crate::engine::MediaData::Mono { samples, .. }) => {
                            crate::attach::waveform(samples, 120)
                        }
                        _ => Vec::new(),
                    };
                    (att, wave)
                })
                .map_err(line),
        ),
        Job::SaveSession {
            dir,
            name,
            messages,
            auto,
        } => Outcome::Saved {
            result: crate::tui::session::save(&dir, &name, &messages).map_err(line),
            name,
            auto,
        },
        Job::LoadSession { dir, name } => Outcome::SessionLoaded {
            result: crate::tui::session::load(&dir, &name).map_err(line),
            name,
        },
        Job::BuildMap { root, previous } => Outcome::MapBuilt(
            crate::repomap::build::build(&root, previous.as_deref())
                .map(|(tags, stats)| (std::sync::Arc::new(tags), stats))
                .map_err(|e| e.to_string()),
        ),
    }
}
