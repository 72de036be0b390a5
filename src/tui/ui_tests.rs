//! Tests of the whole app without a terminal: insta snapshots of `ui::draw` on ratatui's
//! `TestBackend` (empty start, a streamed exchange with a highlighted code block, the code pane with
//! an outline, the command popup, an attachment chip, a tiny terminal, a latent-mode reply's
//! thoughts shown and hidden) and behaviour tests that
//! drive `App::update` with the same key events the terminal loop produces.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::config::Config;
use crate::engine::scripted::ScriptedEngine;
use crate::engine::{Engine, GenEvent, GenRequest};
use crate::tui::app::effect::Effect;
use crate::tui::app::{Action, App, Focus, GenState, Paths};
use crate::tui::theme::Theme;

pub(super) fn app_in(cwd: &Path) -> App {
    let e = ScriptedEngine::new(Duration::ZERO);
    App::new(
        Config::default(),
        Theme::dark(),
        Ok((e.info(), e.token_counter())),
        Paths {
            cwd: cwd.to_path_buf(),
            data_dir: None,
            config_dir: None,
        },
    )
}

fn key(code: KeyCode, m: KeyModifiers) -> KeyEvent {
    KeyEvent::new(code, m)
}

/// A key, then the jobs it started (attachments, sessions) run here as the event loop runs them
/// on their own threads, their outcomes applied.
pub(super) fn press(app: &mut App, code: KeyCode, m: KeyModifiers) {
    if let Some(a) = app.action_for_key(key(code, m)) {
        app.update(a);
    }
    run_jobs(app);
}

pub(super) fn run_jobs(app: &mut App) {
    let (jobs, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut app.effects)
        .into_iter()
        .partition(|e| matches!(e, Effect::Job(_)));
    app.effects = rest;
    for e in jobs {
        if let Effect::Job(job) = e {
            app.update(Action::Finished(crate::tui::jobs::run(job)));
        }
    }
}

fn type_str(app: &mut App, s: &str) {
    for c in s.chars() {
        press(app, KeyCode::Char(c), KeyModifiers::NONE);
    }
}

pub(super) fn render(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| crate::tui::ui::draw(app, f)).unwrap();
    t
}

/// Takes the pending `Generate` effect.
pub(super) fn take_request(app: &mut App) -> GenRequest {
    let effects = std::mem::take(&mut app.effects);
    effects
        .into_iter()
        .find_map(|e| match e {
            Effect::Generate(r) => Some(r),
            Effect::Copy(_) | Effect::Job(_) | Effect::Quit => None,
        })
        .expect("a Generate effect")
}

/// The scripted engine's events for a request.
pub(super) fn events_for(req: &GenRequest) -> Vec<GenEvent> {
    let mut e = ScriptedEngine::new(Duration::ZERO);
    let mut v = Vec::new();
    e.generate(req, &AtomicBool::new(false), &mut |ev| v.push(ev))
        .unwrap();
    // Fixed numbers keep the snapshot stable.
    if let Some(GenEvent::Done {
        tok_per_s,
        first_token_ms,
        ..
    }) = v.last_mut()
    {
        *tok_per_s = 25.0;
        *first_token_ms = 40.0;
    }
    v
}

#[test]
fn snapshot_empty_start() {
    let dir = tempfile::tempdir().unwrap();
    let app = app_in(dir.path());
    insta::assert_snapshot!("empty_start", render(&app, 80, 16).backend());
}

#[test]
fn snapshot_streamed_exchange_with_highlighted_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app_in(dir.path());
    type_str(&mut app, "show me code");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    let req = take_request(&mut app);
    assert_eq!(app.gen, GenState::Waiting);
    let events = events_for(&req);
    // Halfway through: streaming.
    let half = events.len() / 2;
    for ev in events[..half].iter().cloned() {
        app.update(Action::Gen(ev));
    }
    assert_eq!(app.gen, GenState::Streaming);
    insta::assert_snapshot!("exchange_streaming", render(&app, 70, 22).backend());
    for ev in events[half..].iter().cloned() {
        app.update(Action::Gen(ev));
    }
    assert_eq!(app.gen, GenState::Idle);
    // PgUp scrolls back by at most what there is; PgDn returns to the bottom.
    render(&app, 70, 10);
    press(&mut app, KeyCode::PageUp, KeyModifiers::NONE);
    assert_eq!(app.chat.scroll, app.chat.max_scroll.get());
    assert!(app.chat.scroll > 0);
    let top = format!("{}", render(&app, 70, 10).backend());
    assert!(top.contains("▌ you"), "{top}");
    press(&mut app, KeyCode::PageDown, KeyModifiers::NONE);
    assert_eq!(app.chat.scroll, 0);
    let t = render(&app, 70, 22);
    insta::assert_snapshot!("exchange_done", t.backend());
    // The code block's keyword `let` is drawn in the theme's keyword colour on the code background.
    let buf = t.backend().buffer();
    let theme = Theme::dark();
    let mut found = false;
    for y in 0..buf.area.height {
        let row: String = (0..buf.area.width)
            .map(|x| buf[(x, y)].symbol().to_string())
            .collect();
        if let Some(col) = row.find("let answer") {
            let cell = &buf[(col as u16, y)];
            assert_eq!(cell.fg, theme.syntax_color(theme.syntax.keyword));
            assert_eq!(cell.bg, theme.code_bg);
            found = true;
        }
    }
    assert!(found, "code line not on screen");
}

const DEMO_RS: &str = "struct Counter { n: u32 }\n\nimpl Counter {\n    fn new() -> Self {\n        Counter { n: 0 }\n    }\n\n    fn bump(&mut self) {\n        self.n += 1;\n    }\n}\n\nfn main() {\n    let mut c = Counter::new();\n    c.bump();\n}\n";

#[test]
fn snapshot_code_pane_with_outline_and_symbol_to_context() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("demo.rs"), DEMO_RS).unwrap();
    let mut app = app_in(dir.path());
    type_str(&mut app, "/file demo.rs");
    app.composer.popup = None;
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    assert!(app.code.visible);
    assert_eq!(app.composer.context.len(), 1);
    press(&mut app, KeyCode::F(2), KeyModifiers::NONE);
    assert_eq!(app.focus, Focus::CodePane);
    press(&mut app, KeyCode::Down, KeyModifiers::NONE);
    press(&mut app, KeyCode::Down, KeyModifiers::NONE);
    insta::assert_snapshot!("code_pane_outline", render(&app, 90, 24).backend());
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    assert_eq!(app.focus, Focus::Composer);
    assert_eq!(
        app.composer.context.len(),
        1,
        "the symbol replaces the whole file"
    );
    assert_eq!(
        app.composer.context[0].label,
        "demo.rs: method new (lines 4-6)"
    );
    assert_eq!(
        app.composer.context[0].text,
        "    fn new() -> Self {\n        Counter { n: 0 }\n    }\n"
    );
    type_str(&mut app, "explain");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    let req = take_request(&mut app);
    assert_eq!(
        req.messages.last().unwrap().context[0].label,
        "demo.rs: method new (lines 4-6)"
    );
}

#[test]
fn snapshot_command_popup_and_completion() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app_in(dir.path());
    type_str(&mut app, "/");
    insta::assert_snapshot!("command_popup", render(&app, 80, 20).backend());
    type_str(&mut app, "th");
    press(&mut app, KeyCode::Tab, KeyModifiers::NONE);
    assert_eq!(app.composer.text.lines()[0], "/theme ");
    type_str(&mut app, "li");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE); // completes "light"
    assert_eq!(app.composer.text.lines()[0], "/theme light");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    assert_eq!(app.theme.name, "light");
}

#[test]
fn snapshot_attachment_chip_and_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let img = image::RgbImage::from_fn(8, 8, |x, y| {
        image::Rgb([(x * 30) as u8, (y * 30) as u8, 128])
    });
    img.save(dir.path().join("cat.png")).unwrap();
    let mut s: Vec<i16> = (0..8000)
        .map(|i| ((i as f32 * 0.05).sin() * 8000.0 * (i as f32 / 8000.0)) as i16)
        .collect();
    s.truncate(8000);
    std::fs::write(
        dir.path().join("hum.wav"),
        crate::attach::tests::wav_bytes(8000, &s),
    )
    .unwrap();
    let mut app = app_in(dir.path());
    app.update(Action::Paste("/img cat.png".into()));
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    // The preview (ratatui-image, half-block protocol in tests) is drawn in the pane.
    let t = render(&app, 90, 20);
    let screen = format!("{}", t.backend());
    assert!(
        screen.contains("img cat.png 8×8") && screen.contains('▀'),
        "{screen}"
    );
    app.update(Action::Paste("/audio hum.wav".into()));
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    assert_eq!(app.composer.attachments.len(), 2);
    insta::assert_snapshot!("attachment_chips", render(&app, 90, 20).backend());
    type_str(&mut app, "what is this?");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    let req = take_request(&mut app);
    assert!(
        req.messages.iter().all(|m| m.attachments.is_empty()),
        "not sent to a text-only model"
    );
    let notice = app
        .chat
        .entries
        .iter()
        .any(|e| e.msg.content.contains("takes no image or audio input"));
    assert!(notice, "the refusal is said plainly");
}

#[test]
fn snapshot_tiny_terminal_and_resizing_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("demo.rs"), DEMO_RS).unwrap();
    let mut app = app_in(dir.path());
    type_str(&mut app, "/file demo.rs");
    app.composer.popup = None;
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    type_str(&mut app, "hello");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    let req = take_request(&mut app);
    for ev in events_for(&req) {
        app.update(Action::Gen(ev));
    }
    type_str(&mut app, "/");
    insta::assert_snapshot!("tiny_terminal", render(&app, 20, 5).backend());
    let mut t = Terminal::new(TestBackend::new(120, 40)).unwrap();
    for (w, h) in (1..=120)
        .step_by(7)
        .flat_map(|w| (1..=40).step_by(3).map(move |h| (w, h)))
    {
        t.backend_mut().resize(w, h);
        t.resize(ratatui::layout::Rect::new(0, 0, w, h)).unwrap();
        t.draw(|f| crate::tui::ui::draw(&app, f)).unwrap();
    }
}

#[test]
fn enter_sends_and_three_chords_insert_newlines() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app_in(dir.path());
    type_str(&mut app, "a");
    press(&mut app, KeyCode::Enter, KeyModifiers::SHIFT);
    type_str(&mut app, "b");
    press(&mut app, KeyCode::Enter, KeyModifiers::ALT);
    type_str(&mut app, "c");
    press(&mut app, KeyCode::Char('j'), KeyModifiers::CONTROL);
    type_str(&mut app, "d");
    assert_eq!(app.composer.text.lines(), ["a", "b", "c", "d"]);
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    let req = take_request(&mut app);
    assert_eq!(req.messages.last().unwrap().content, "a\nb\nc\nd");
    assert!(app.composer.text.is_empty());
}

#[test]
fn a_one_megabyte_paste_becomes_a_chip_fast_and_is_cut_to_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app_in(dir.path());
    let big: String = (0..30_000)
        .map(|i| format!("line number {i:05} of the paste...\n"))
        .collect();
    assert!(big.len() > 1_000_000);
    let start = Instant::now();
    app.update(Action::Paste(big.clone()));
    render(&app, 80, 24);
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(500),
        "paste + frame took {took:?}"
    );
    assert!(app.composer.text.is_empty());
    assert_eq!(app.composer.context.len(), 1);
    assert!(app.composer.context[0]
        .label
        .starts_with("pasted text (30000 lines"));
    type_str(&mut app, "summarize");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    let req = take_request(&mut app);
    let ctx = &req.messages.last().unwrap().context[0];
    let budget = 2048 - app.config.max_new_tokens;
    assert!(
        ctx.text.len().div_ceil(4) <= budget,
        "snippet is within the budget"
    );
    assert!(ctx.text.contains("truncated"));
    assert!(big.starts_with(ctx.text.lines().next().unwrap()));
}

#[test]
fn esc_stops_the_reply_and_ctrl_c_twice_quits() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app_in(dir.path());
    type_str(&mut app, "hi");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    let _ = take_request(&mut app);
    app.update(Action::Gen(GenEvent::Token {
        text: "partial".into(),
    }));
    press(&mut app, KeyCode::Esc, KeyModifiers::NONE);
    assert!(app.cancel.load(Ordering::Relaxed));
    assert_eq!(app.gen, GenState::Stopping);
    app.update(Action::Gen(GenEvent::Done {
        tokens: 1,
        tok_per_s: 1.0,
        first_token_ms: 1.0,
        cancelled: true,
        thoughts: 0,
    }));
    assert_eq!(app.gen, GenState::Idle);
    assert!(app
        .chat
        .entries
        .last()
        .unwrap()
        .stats
        .as_deref()
        .unwrap()
        .ends_with("stopped"));

    press(&mut app, KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert!(app.effects.is_empty(), "one Ctrl+C does not quit");
    press(&mut app, KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(app.effects, vec![Effect::Quit]);
}

#[test]
fn copy_names_the_nth_code_block_and_mentions_add_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.py"), "def f():\n    return 1\n").unwrap();
    let mut app = app_in(dir.path());
    type_str(&mut app, "look at @a.py please");
    app.composer.popup = None;
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    let req = take_request(&mut app);
    let ctx = &req.messages.last().unwrap().context;
    assert_eq!(ctx.len(), 1);
    assert_eq!(
        (ctx[0].label.as_str(), ctx[0].text.as_str()),
        ("a.py", "def f():\n    return 1\n")
    );
    for ev in events_for(&req) {
        app.update(Action::Gen(ev));
    }
    type_str(&mut app, "/copy 1");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    let code = crate::tui::markdown::code_blocks(&ScriptedEngine::reply_for(&req))[0]
        .code
        .clone();
    assert_eq!(app.effects, vec![Effect::Copy(code)]);
    app.effects.clear();
    type_str(&mut app, "/copy 7");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    assert!(app.effects.is_empty());
    assert!(app
        .chat
        .entries
        .last()
        .unwrap()
        .msg
        .content
        .contains("no code block 7"));
}

#[test]
fn binary_and_missing_files_give_messages_not_crashes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.bin"), [0u8, 1, 2]).unwrap();
    let mut app = app_in(dir.path());
    for cmd in [
        "/file b.bin",
        "/file nope.rs",
        "/img nope.png",
        "/audio b.bin",
        "/copy",
        "/load",
    ] {
        app.update(Action::Paste(cmd.into()));
        app.composer.popup = None;
        press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
        let last = app.chat.entries.last().unwrap();
        assert_eq!(
            last.kind,
            crate::tui::app::chat::EntryKind::Error,
            "{cmd}: {}",
            last.msg.content
        );
    }
    render(&app, 60, 20);
}

#[test]
fn no_engine_is_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = App::new(
        Config::default(),
        Theme::dark(),
        Err("cannot load the built-in model".into()),
        Paths {
            cwd: dir.path().to_path_buf(),
            data_dir: None,
            config_dir: None,
        },
    );
    type_str(&mut app, "hello");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    assert!(app.effects.is_empty());
    let t = render(&app, 80, 12);
    let screen = format!("{}", t.backend());
    assert!(screen.contains("no model to answer"), "{screen}");
    assert!(screen.contains("no model ·"), "{screen}");
}

#[test]
fn sessions_save_and_load_through_commands() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app_in(dir.path());
    app.paths.data_dir = Some(dir.path().join("data"));
    type_str(&mut app, "remember this");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    let req = take_request(&mut app);
    for ev in events_for(&req) {
        app.update(Action::Gen(ev));
    }
    let saved = app.chat.messages();
    app.update(Action::Paste("/save mine".into()));
    app.composer.popup = None;
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    app.update(Action::Paste("/clear".into()));
    app.composer.popup = None;
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    assert!(app.chat.messages().is_empty());
    app.update(Action::Paste("/load mine".into()));
    app.composer.popup = None;
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    assert_eq!(app.chat.messages(), saved);
}

#[test]
fn snapshot_latent_thoughts_shown_and_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = app_in(dir.path());
    type_str(&mut app, "/latent on");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    assert_eq!(app.latent, crate::engine::LatentMode::On);
    // The scripted engine was not latent-trained: /latent on says replies will fail.
    let said = &app.chat.entries.last().unwrap().msg.content;
    assert!(said.contains("not latent-trained"), "{said}");
    app.chat.clear("t".into());
    type_str(&mut app, "think first");
    press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    let req = take_request(&mut app);
    assert_eq!(req.latent, crate::engine::LatentMode::On);
    assert_eq!(req.latent_min_cosine, Config::default().latent_min_cosine);
    let events = events_for(&req);
    let first_token = events
        .iter()
        .position(|e| matches!(e, GenEvent::Token { .. }))
        .unwrap();
    for ev in events[..first_token + 3].iter().cloned() {
        app.update(Action::Gen(ev));
    }
    // A notice about the reply lands above it, not under the streaming text.
    app.update(Action::Gen(GenEvent::Notice(
        "a notice about this reply".into(),
    )));
    let t = render(&app, 70, 18);
    let screen = format!("{}", t.backend());
    assert!(
        screen.find("a notice about").unwrap() < screen.find("▾ thinking").unwrap(),
        "{screen}"
    );
    insta::assert_snapshot!("latent_thoughts_shown", t.backend());
    for ev in events[first_token + 3..].iter().cloned() {
        app.update(Action::Gen(ev));
    }
    press(&mut app, KeyCode::Char('t'), KeyModifiers::CONTROL);
    assert!(!app.show_thoughts);
    let t = render(&app, 70, 28);
    let screen = format!("{}", t.backend());
    assert!(!screen.contains("thought 1:"), "{screen}");
    insta::assert_snapshot!("latent_thoughts_hidden", t.backend());
    press(&mut app, KeyCode::Char('t'), KeyModifiers::CONTROL);
    assert!(format!("{}", render(&app, 70, 40).backend()).contains("thought 2: reply (0.77)"));
    // The thoughts are saved with the session and shown again after /load.
    app.paths.data_dir = Some(dir.path().join("data"));
    let saved = app.chat.messages();
    assert!(saved.iter().any(|m| m.thoughts.len() > 1), "{saved:?}");
    for cmd in ["/save thinking", "/clear", "/load thinking"] {
        app.update(Action::Paste(cmd.into()));
        app.composer.popup = None;
        press(&mut app, KeyCode::Enter, KeyModifiers::NONE);
    }
    assert_eq!(app.chat.messages(), saved);
    assert!(format!("{}", render(&app, 70, 40).backend()).contains("thought 2: reply (0.77)"));
}

/// On a GPU the status bar names the KV cache the engine sized to the card, and says when the
/// context was shortened to fit (issue #19).
#[test]
fn status_bar_shows_the_gpu_cache_choice() {
    use tritter_model::plan::ModelDims;
    use tritter_model::plan_gpu::{fit, GpuFitRequest, GpuKvKind};
    let dir = tempfile::tempdir().unwrap();
    let mut app = app_in(dir.path());
    let req = GpuFitRequest {
        kv: GpuKvKind::Int4,
        window: 0,
        context: 131_072,
        chunk: 512,
        head_f16: true,
    };
    let f = fit(&ModelDims::tritter_7b(), 8 << 30, &req).unwrap();
    if let Ok(i) = &mut app.engine {
        i.device = "cuda:0 (GPU)".into();
        i.context_limit = f.context;
        i.gpu_fit = Some(f);
    }
    let screen = format!("{}", render(&app, 160, 8).backend());
    assert!(
        screen.contains("cuda:0 (GPU) · int4 KV, ctx shortened to fit"),
        "{screen}"
    );
}
