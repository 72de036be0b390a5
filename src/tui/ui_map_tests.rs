//! Tests of the repo map and completion mode in the app: an insta snapshot of `/map` (the map as
//! a system note, the status bar's `map N files`), the map riding with a message within its
//! budget, `/map off` and `/raw on` in the request, and the rebuild after each reply.

use crossterm::event::{KeyCode, KeyModifiers};

use super::ui_tests::{app_in, events_for, press, render, run_jobs, take_request};
use crate::tui::app::effect::{Effect, Job};
use crate::tui::app::Action;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::write(
        p.join("store.py"),
        "class Store:\n    def get(self, key):\n        return key\n",
    )
    .unwrap();
    std::fs::write(
        p.join("app.py"),
        "from store import Store\n\ndef main():\n    s = Store()\n    return s.get(1)\n",
    )
    .unwrap();
    std::fs::write(
        p.join("lib.rs"),
        "pub fn helper() -> u32 { 1 }\nfn run() { helper(); }\n",
    )
    .unwrap();
    dir
}

/// A line pasted (no completion popup) and sent.
fn command(app: &mut crate::tui::app::App, line: &str) {
    app.update(Action::Paste(line.into()));
    app.composer.popup = None;
    press(app, KeyCode::Enter, KeyModifiers::NONE);
}

#[test]
fn snapshot_map_command_shows_the_map() {
    let dir = project();
    let mut app = app_in(dir.path());
    app.build_map();
    run_jobs(&mut app);
    command(&mut app, "/map");
    insta::assert_snapshot!("map_command", render(&app, 90, 18).backend());
    // /map asked for a fresh build, which found every file unchanged and parsed none.
    let (_, stats) = app.map.tags.as_ref().unwrap();
    assert_eq!((stats.files, stats.parsed), (3, 0));
}

#[test]
fn the_map_rides_with_a_message_and_off_and_raw_leave_it_out() {
    let dir = project();
    let mut app = app_in(dir.path());
    app.build_map();
    run_jobs(&mut app);
    command(&mut app, "where is Store used?");
    let req = take_request(&mut app);
    let last = req.messages.last().unwrap();
    let map = last
        .context
        .iter()
        .find(|c| c.label.starts_with("Repository map"))
        .expect("a map");
    assert!(
        map.text.starts_with("store.py:\n  1: class Store:"),
        "{}",
        map.text
    );
    assert!((app.counter)(&map.text) <= app.config.repo_map_tokens);
    assert!(!req.raw);
    for ev in events_for(&req) {
        app.update(Action::Gen(ev));
    }
    // The reply's end starts an incremental rebuild.
    assert!(app
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Job(Job::BuildMap { .. }))));
    run_jobs(&mut app);
    command(&mut app, "/map off");
    let status = format!("{:?}", render(&app, 120, 10).backend());
    assert!(status.contains("map off"), "{status}");
    command(&mut app, "hello again");
    let req = take_request(&mut app);
    assert!(req.messages.iter().all(|m| m.context.is_empty()));
    for ev in events_for(&req) {
        app.update(Action::Gen(ev));
    }
    assert!(
        !app.effects.iter().any(|e| matches!(e, Effect::Job(_))),
        "off: no rebuild"
    );
    command(&mut app, "/map on");
    command(&mut app, "/raw on");
    run_jobs(&mut app);
    command(&mut app, "def add(a, b):");
    let req = take_request(&mut app);
    assert!(req.raw);
    assert_eq!(req.messages.len(), 1, "no history in completion mode");
    assert!(
        req.messages[0].context.is_empty(),
        "no map in completion mode"
    );
    let status = format!("{:?}", render(&app, 120, 10).backend());
    assert!(status.contains("raw"), "{status}");
    command(&mut app, "/map sideways");
    let last = app.chat.entries.last().unwrap();
    assert!(
        last.msg.content.contains("takes on or off"),
        "{}",
        last.msg.content
    );
}
