//! What the app asks the terminal loop to do (`Effect`), the disk and decode work among it that
//! runs off the UI thread (`Job`, carried out by `tui::jobs`), and what such work reports back
//! (`Outcome`, applied by `App::update` as `Action::Finished`). Repo map builds are jobs too.

use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::{Attachment, GenRequest};
use crate::repomap::{BuildStats, RepoTags};
use crate::tui::session::SavedMessage;

/// Work for the terminal loop.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    Generate(GenRequest),
    Copy(String),
    /// Disk or decode work, run on its own thread; its `Outcome` comes back as an action.
    Job(Job),
    Quit,
}

/// Slow work that must not block a keystroke: attachments up to 50 MB, session files.
#[derive(Clone, Debug, PartialEq)]
pub enum Job {
    /// Decode an image (PNG/JPEG) for `/img`.
    LoadImage(PathBuf),
    /// Decode audio (WAV/FLAC/MP3) for `/audio`.
    LoadAudio(PathBuf),
    /// Write the conversation to the session file `name` (`auto`: the save after each reply).
    SaveSession {
        dir: PathBuf,
        name: String,
        messages: Vec<SavedMessage>,
        auto: bool,
    },
    /// Read the session file `name` for `/load`.
    LoadSession { dir: PathBuf, name: String },
    /// Build the repo map of `root`, reusing the tags of `previous` for unchanged files.
    BuildMap {
        root: PathBuf,
        previous: Option<Arc<RepoTags>>,
    },
}

/// What a finished `Job` reports; errors are one line with their cause chain.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The attachment and its preview picture (at most `PREVIEW_MAX` pixels a side).
    Image(Result<(Attachment, image::DynamicImage), String>),
    /// The attachment and its waveform (one bar per column).
    Audio(Result<(Attachment, Vec<u64>), String>),
    Saved {
        name: String,
        auto: bool,
        result: Result<PathBuf, String>,
    },
    SessionLoaded {
        name: String,
        result: Result<Vec<SavedMessage>, String>,
    },
    MapBuilt(Result<(Arc<RepoTags>, BuildStats), String>),
}

/// Longest side of an image preview handed to the UI thread: larger than any terminal cell grid
/// shows, small enough that building the preview there costs nothing.
pub const PREVIEW_MAX: u32 = 1024;
