//! Panics the program expects and turns into errors: a dependency that panics on malformed input
//! (the tokenizers crate on some `tokenizer.json` files, rubato on index edge cases, a Symphonia
//! decoder on a broken file) or a generation that fails. [`catch`] runs a closure under
//! `catch_unwind` and marks the thread while it runs, so the TUI's panic hook
//! ([`is_catching`], `tui::terminal`) leaves the terminal alone and prints nothing over the
//! screen: the app goes on and shows the error in the chat, with the panic's message.
//!
//! Must match: a panic outside [`catch`] still reaches the hook (terminal restored, message
//! printed); inside it, the hook stays silent and the message comes back as the `Err`.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};

thread_local! {
    static DEPTH: Cell<u32> = const { Cell::new(0) };
}

/// Whether this thread is inside [`catch`] (the panic hook asks).
pub fn is_catching() -> bool {
    DEPTH.with(|d| d.get() > 0)
}

/// Runs `f`; a panic inside it becomes `Err` with the panic's message.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    DEPTH.with(|d| d.set(d.get() + 1));
    let out = catch_unwind(AssertUnwindSafe(f));
    DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    out.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// The hook for processes that draw a screen: silent inside [`catch`], else `outer`.
pub fn install_hook(outer: impl Fn(&std::panic::PanicHookInfo<'_>) + Send + Sync + 'static) {
    std::panic::set_hook(Box::new(move |info| {
        if !is_catching() {
            outer(info);
        }
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::thread::ThreadId;

    #[test]
    fn caught_panics_skip_the_hook_and_others_reach_it() {
        // The hook is process-wide and other tests may panic meanwhile: it records the thread
        // of each panic it sees, and the test looks only at its own threads.
        let seen: Arc<Mutex<Vec<ThreadId>>> = Arc::default();
        let prev = std::panic::take_hook();
        let s = seen.clone();
        install_hook(move |_| s.lock().unwrap().push(std::thread::current().id()));
        let caught = catch(|| -> u32 { panic!("bad input {}", 7) });
        assert_eq!(caught, Err("bad input 7".to_string()));
        assert_eq!(catch(|| panic!("plain")), Err::<(), _>("plain".to_string()));
        assert_eq!(catch(|| 5), Ok(5));
        assert!(!is_catching());
        let outside = std::thread::spawn(|| -> ThreadId {
            let me = std::thread::current().id();
            let _ = catch(|| panic!("caught on a thread"));
            std::panic::panic_any(me)
        })
        .join()
        .unwrap_err();
        std::panic::set_hook(prev);
        let other = *outside.downcast_ref::<ThreadId>().unwrap();
        let seen = seen.lock().unwrap();
        assert!(!seen.contains(&std::thread::current().id()), "{seen:?}");
        assert_eq!(seen.iter().filter(|&&t| t == other).count(), 1, "{seen:?}");
    }
}
