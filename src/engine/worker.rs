//! The generation worker: a thread that owns the engine, takes requests over a channel and streams
//! its `GenEvent`s back through a callback, so the UI thread never waits on the model. A panic in
//! the engine becomes an `Error` event instead of a hung UI.

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::engine::{Engine, GenEvent, GenRequest};

pub struct Worker {
    tx: Option<Sender<GenRequest>>,
    handle: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread. `emit` is called on the worker thread for every event.
    pub fn spawn(
        mut engine: Box<dyn Engine>,
        cancel: Arc<AtomicBool>,
        emit: impl Fn(GenEvent) + Send + 'static,
    ) -> anyhow::Result<Self> {
        let (tx, rx) = channel::<GenRequest>();
        let handle = std::thread::Builder::new()
            .name("tritter-gen".into())
            .spawn(move || {
                for req in rx {
                    let mut sink = |ev: GenEvent| emit(ev);
                    let res = crate::caught::catch(|| engine.generate(&req, &cancel, &mut sink));
                    match res {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => emit(GenEvent::Error(format!("{e:#}"))),
                        Err(m) => emit(GenEvent::Error(format!(
                            "the engine crashed (panic) during generation: {m}"
                        ))),
                    }
                }
            })?;
        Ok(Self {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    pub fn send(&self, req: GenRequest) -> anyhow::Result<()> {
        self.tx
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("the generation worker has stopped"))?
            .send(req)
            .map_err(|_| anyhow::anyhow!("the generation worker has stopped"))
    }

    /// Closes the request channel and waits for the thread (the caller sets the cancel flag first).
    pub fn shutdown(mut self) {
        self.tx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::scripted::ScriptedEngine;
    use crate::engine::{ChatMessage, EngineInfo, Role, Sampling, TokenCounter};
    use std::sync::mpsc;
    use std::time::Duration;

    fn req() -> GenRequest {
        GenRequest {
            messages: vec![ChatMessage::new(Role::User, "hi")],
            latent: crate::engine::LatentMode::Off,
            latent_min_cosine: 0.0,
            raw: false,
            max_new_tokens: 100,
            sampling: Sampling::default(),
        }
    }

    #[test]
    fn streams_events_from_another_thread() {
        let (tx, rx) = mpsc::channel();
        let cancel = Arc::new(AtomicBool::new(false));
        let w = Worker::spawn(
            Box::new(ScriptedEngine::new(Duration::ZERO)),
            cancel,
            move |ev| {
                let _ = tx.send((std::thread::current().name().map(String::from), ev));
            },
        )
        .unwrap();
        w.send(req()).unwrap();
        let mut text = String::new();
        loop {
            let (thread, ev) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
            assert_eq!(thread.as_deref(), Some("tritter-gen"));
            match ev {
                GenEvent::Token { text: t } => text.push_str(&t),
                GenEvent::Done { .. } => break,
                _ => {}
            }
        }
        assert_eq!(text, ScriptedEngine::reply_for(&req()));
        w.shutdown();
    }

    struct Panicky;
    impl Engine for Panicky {
        fn info(&self) -> EngineInfo {
            unimplemented!("not used")
        }
        fn token_counter(&self) -> TokenCounter {
            Arc::new(|t: &str| t.len())
        }
        fn generate(
            &mut self,
            _: &GenRequest,
            _: &AtomicBool,
            _: &mut dyn FnMut(GenEvent),
        ) -> anyhow::Result<()> {
            panic!("boom")
        }
    }

    #[test]
    fn an_engine_panic_becomes_an_error_event() {
        let (tx, rx) = mpsc::channel();
        let w = Worker::spawn(
            Box::new(Panicky),
            Arc::new(AtomicBool::new(false)),
            move |ev| {
                let _ = tx.send(ev);
            },
        )
        .unwrap();
        w.send(req()).unwrap();
        let ev = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert!(matches!(ev, GenEvent::Error(m) if m.contains("panic")));
    }
}
