//! The handler → supervisor → reply round trip: one `GetStatus` request to the root supervisor
//! and its registry back, from another thread (as an HTTP worker does), with a live child.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use criterion::{criterion_group, criterion_main, Criterion};
use tipoff_actors::supervisor::{self, GetStatus};
use tipoff_actors::{
    factory, ChildSpec, Control, ServiceCtx, Shared, Supervisor, SupervisorSettings,
};

struct Idle(#[allow(dead_code)] ServiceCtx);

impl Actor for Idle {
    type Context = Context<Self>;
}

impl Handler<Control> for Idle {
    type Result = ();

    fn handle(&mut self, msg: Control, ctx: &mut Self::Context) {
        if msg == Control::Stop {
            ctx.stop();
        }
    }
}

fn round_trip(c: &mut Criterion) {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let sys = actix_rt::System::new();
        sys.block_on(async move {
            let specs = (0..6)
                .map(|i| ChildSpec::new(format!("idle-{i}"), factory(|svc| Ok(Idle(svc)))))
                .collect();
            let (sup, _fatal) = Supervisor::new(
                specs,
                SupervisorSettings::default(),
                Arc::new(Shared::default()),
            );
            let addr = sup.start();
            supervisor::start_all(&addr).await.unwrap();
            tx.send(addr).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let addr = rx.recv().unwrap();
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("supervisor");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("get_status_round_trip_6_children", |b| {
        b.iter(|| client.block_on(addr.send(GetStatus)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, round_trip);
criterion_main!(benches);
