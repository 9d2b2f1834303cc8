//! Purpose-built children for the supervision tests.

use std::future::pending;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use tipoff_actors::{factory, ChildSpec, Control, ServiceCtx};

#[derive(Debug, Clone, Copy)]
pub enum Behavior {
    /// Ticks every 10 ms; stops when asked.
    Steady,
    /// Reports a failure and stops after the delay.
    FailAfter(Duration),
    /// Stops cleanly (no failure) after the delay.
    ExitAfter(Duration),
    /// On its first life only.
    PanicInHandler,
    PanicInTimer,
    PanicInStarted,
    /// Blocks its mailbox forever (first life only).
    HangMailbox,
    /// Blocks its thread for 2 s (first life only).
    HangThread,
    /// Begins a tick that never ends (first life only).
    HangTick,
    /// Never stops when asked.
    IgnoreStop,
}

/// What the children did, in order.
/// One journal line: which child, what happened, when.
pub type Entry = (String, &'static str, Instant);

#[derive(Clone, Default)]
pub struct Journal(Arc<Mutex<Vec<Entry>>>);

impl Journal {
    fn record(&self, name: &str, what: &'static str) {
        self.0
            .lock()
            .unwrap()
            .push((name.to_string(), what, Instant::now()));
    }

    pub fn starts(&self, name: &str) -> Vec<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, w, _)| n == name && *w == "start")
            .map(|(_, _, t)| *t)
            .collect()
    }

    fn order(&self, what: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, w, _)| *w == what)
            .map(|(n, _, _)| n.clone())
            .collect()
    }

    pub fn start_order(&self) -> Vec<String> {
        self.order("start")
    }

    pub fn stop_order(&self) -> Vec<String> {
        self.order("stop")
    }

    pub async fn wait_starts(&self, name: &str, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.starts(name).len() < n {
            assert!(
                Instant::now() < deadline,
                "{name} started {} times, expected {n}",
                self.starts(name).len()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

pub struct TestChild {
    svc: ServiceCtx,
    behavior: Behavior,
    journal: Journal,
    first_life: bool,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Boom;

#[derive(Message)]
#[rtype(result = "()")]
struct Block;

impl Actor for TestChild {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.journal.record(self.svc.name(), "start");
        if !(matches!(self.behavior, Behavior::HangTick) && self.first_life) {
            ctx.run_interval(Duration::from_millis(10), |act, _| {
                act.svc.tick_begin();
                act.svc.tick_ok();
            });
        }
        match self.behavior {
            Behavior::FailAfter(d) => {
                ctx.run_later(d, |act, ctx| {
                    act.svc
                        .fail(&format!("{}: deliberate failure", act.svc.name()));
                    ctx.stop();
                });
            }
            Behavior::ExitAfter(d) => {
                ctx.run_later(d, |_, ctx| ctx.stop());
            }
            Behavior::PanicInHandler if self.first_life => ctx.notify(Boom),
            Behavior::PanicInTimer if self.first_life => {
                ctx.run_later(Duration::from_millis(20), |_, _| panic!("boom in timer"));
            }
            Behavior::PanicInStarted if self.first_life => panic!("boom in started"),
            Behavior::HangMailbox if self.first_life => ctx.wait(pending::<()>().into_actor(self)),
            Behavior::HangThread if self.first_life => ctx.notify(Block),
            Behavior::HangTick if self.first_life => {
                self.svc.tick_begin();
                ctx.spawn(pending::<()>().into_actor(self));
            }
            _ => {}
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.journal.record(self.svc.name(), "stop");
    }
}

impl Handler<Control> for TestChild {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        if msg == Control::Stop && !matches!(self.behavior, Behavior::IgnoreStop) {
            ctx.stop();
        }
    }
}

impl Handler<Boom> for TestChild {
    type Result = ();

    fn handle(&mut self, _: Boom, _: &mut Self::Context) {
        panic!("boom in handler");
    }
}

impl Handler<Block> for TestChild {
    type Result = ();

    fn handle(&mut self, _: Block, _: &mut Self::Context) {
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// A child spec running a [`TestChild`] with `behavior`.
pub fn spec(name: &str, behavior: Behavior, journal: &Journal) -> ChildSpec {
    let journal = journal.clone();
    let lives = Arc::new(Mutex::new(0u32));
    ChildSpec::new(
        name,
        factory(move |svc| {
            let mut n = lives.lock().unwrap();
            *n += 1;
            Ok(TestChild {
                svc,
                behavior,
                journal: journal.clone(),
                first_life: *n == 1,
            })
        }),
    )
    .stop_timeout(Duration::from_secs(2))
    .hang_deadline(Duration::from_secs(5))
}

/// Log lines written on this thread while the guard lives.
pub struct Logs {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

impl Logs {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }
}

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn capture_logs() -> Logs {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let writer = BufWriter(buf.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    Logs {
        buf,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}
