//! Supervision tests, driven by purpose-built children that fail, panic, hang, exit or
//! ignore stop requests.

mod children;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use children::{spec, Behavior, Journal};
use tipoff_actors::restart::RestartSettings;
use tipoff_actors::supervisor::{
    self, GetStatus, RestartChild, StartChild, StopChild, SupervisorError,
};
use tipoff_actors::{
    RestartPolicy, ServiceState, ServiceStatus, Shared, Supervisor, SupervisorSettings,
};

fn fast_settings() -> SupervisorSettings {
    SupervisorSettings {
        restart: RestartSettings {
            backoff_base: Duration::from_millis(40),
            backoff_cap: Duration::from_secs(2),
            jitter: false,
            reset_after: Duration::from_secs(60),
            intensity_max: 10,
            intensity_window: Duration::from_secs(60),
        },
        check_interval: Duration::from_millis(20),
        ..SupervisorSettings::default()
    }
}

fn start(
    specs: Vec<tipoff_actors::ChildSpec>,
    settings: SupervisorSettings,
) -> (
    Addr<Supervisor>,
    tokio::sync::mpsc::UnboundedReceiver<supervisor::Fatal>,
) {
    let (sup, fatal) = Supervisor::new(specs, settings, Arc::new(Shared::default()));
    (sup.start(), fatal)
}

async fn status(addr: &Addr<Supervisor>, name: &str) -> ServiceStatus {
    addr.send(GetStatus)
        .await
        .unwrap()
        .get(name)
        .cloned()
        .expect("service exists")
}

/// Polls the registry until `pred` holds for `name`, failing the test after `within`.
async fn wait_for(
    addr: &Addr<Supervisor>,
    name: &str,
    within: Duration,
    pred: impl Fn(&ServiceStatus) -> bool,
) -> ServiceStatus {
    let deadline = Instant::now() + within;
    loop {
        let s = status(addr, name).await;
        if pred(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting on {name}; last status: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[actix_rt::test]
async fn erroring_child_is_restarted_with_growing_delays() {
    let journal = Journal::default();
    let (sup, _fatal) = start(
        vec![spec(
            "flaky",
            Behavior::FailAfter(Duration::from_millis(5)),
            &journal,
        )],
        fast_settings(),
    );
    supervisor::start_all(&sup).await.unwrap();
    journal
        .wait_starts("flaky", 5, Duration::from_secs(5))
        .await;
    let starts = journal.starts("flaky");
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    for pair in gaps.windows(2) {
        assert!(pair[1] > pair[0], "restart delays should grow: {gaps:?}");
    }
    // base 40 ms doubling: the fourth gap alone is at least 320 ms.
    assert!(gaps[3] >= Duration::from_millis(320), "{gaps:?}");
    let s = status(&sup, "flaky").await;
    assert!(s.restarts >= 4, "{s:?}");
    assert_eq!(s.last_error.unwrap().message, "flaky: deliberate failure");
}

#[actix_rt::test]
async fn backoff_resets_after_a_healthy_period() {
    let journal = Journal::default();
    let mut settings = fast_settings();
    settings.restart.reset_after = Duration::from_millis(100);
    let (sup, _fatal) = start(
        vec![spec(
            "slowfail",
            Behavior::FailAfter(Duration::from_millis(150)),
            &journal,
        )],
        settings,
    );
    supervisor::start_all(&sup).await.unwrap();
    journal
        .wait_starts("slowfail", 5, Duration::from_secs(5))
        .await;
    let starts = journal.starts("slowfail");
    for w in starts.windows(2) {
        // 150 ms of healthy running + the base delay of 40 ms, never the doubled delays.
        assert!(
            w[1] - w[0] < Duration::from_millis(150 + 80),
            "{:?}",
            w[1] - w[0]
        );
    }
}

async fn panicking_child_is_restarted_and_siblings_keep_running(
    behavior: Behavior,
    expected: &str,
) {
    let journal = Journal::default();
    let (sup, _fatal) = start(
        vec![
            spec("sibling", Behavior::Steady, &journal),
            spec("panicky", behavior, &journal),
            spec("after", Behavior::Steady, &journal),
        ],
        fast_settings(),
    );
    supervisor::start_all(&sup).await.unwrap();
    let s = wait_for(&sup, "panicky", Duration::from_secs(5), |s| {
        s.restarts == 1 && s.state == ServiceState::Running
    })
    .await;
    let error = s.last_error.expect("the panic is recorded").message;
    assert!(error.contains(expected), "{error}");
    let ticks_before = status(&sup, "sibling").await.ticks;
    tokio::time::sleep(Duration::from_millis(100)).await;
    for name in ["sibling", "after"] {
        let s = status(&sup, name).await;
        assert_eq!(s.state, ServiceState::Running, "{s:?}");
        assert_eq!(s.restarts, 0, "{s:?}");
        assert_eq!(journal.starts(name).len(), 1, "{name} was restarted");
    }
    assert!(
        status(&sup, "sibling").await.ticks > ticks_before,
        "the sibling stopped ticking"
    );
}

#[actix_rt::test]
async fn child_panicking_in_a_handler_is_restarted_and_siblings_keep_running() {
    panicking_child_is_restarted_and_siblings_keep_running(
        Behavior::PanicInHandler,
        "panicked: boom in handler",
    )
    .await;
}

#[actix_rt::test]
async fn child_panicking_in_a_timer_is_restarted_and_siblings_keep_running() {
    panicking_child_is_restarted_and_siblings_keep_running(
        Behavior::PanicInTimer,
        "panicked: boom in timer",
    )
    .await;
}

#[actix_rt::test]
async fn child_panicking_in_started_is_restarted_and_siblings_keep_running() {
    panicking_child_is_restarted_and_siblings_keep_running(
        Behavior::PanicInStarted,
        "panicked: boom in started",
    )
    .await;
}

async fn hanging_child_is_detected_and_restarted(behavior: Behavior, expected: &str) {
    let journal = Journal::default();
    let hang = spec("hangs", behavior, &journal).hang_deadline(Duration::from_millis(150));
    let (sup, _fatal) = start(
        vec![spec("sibling", Behavior::Steady, &journal), hang],
        fast_settings(),
    );
    supervisor::start_all(&sup).await.unwrap();
    let s = wait_for(&sup, "hangs", Duration::from_secs(5), |s| s.restarts >= 1).await;
    let error = s.last_error.expect("the hang is recorded").message;
    assert!(error.contains(expected), "{error}");
    journal
        .wait_starts("hangs", 2, Duration::from_secs(5))
        .await;
    assert_eq!(status(&sup, "sibling").await.state, ServiceState::Running);
    assert_eq!(journal.starts("sibling").len(), 1);
}

#[actix_rt::test]
async fn child_with_a_blocked_mailbox_is_detected_as_hung_and_restarted() {
    hanging_child_is_detected_and_restarted(Behavior::HangMailbox, "hung: no heartbeat").await;
}

#[actix_rt::test]
async fn child_blocking_its_thread_is_detected_as_hung_and_restarted() {
    hanging_child_is_detected_and_restarted(Behavior::HangThread, "hung: no heartbeat").await;
}

#[actix_rt::test]
async fn child_whose_tick_never_ends_is_detected_as_hung_and_restarted() {
    hanging_child_is_detected_and_restarted(Behavior::HangTick, "hung: a tick ran longer").await;
}

#[actix_rt::test]
async fn intensity_limit_leaves_an_optional_child_failed_and_its_siblings_running() {
    let journal = Journal::default();
    let mut settings = fast_settings();
    settings.restart.intensity_max = 3;
    settings.restart.backoff_base = Duration::from_millis(5);
    let (sup, mut fatal) = start(
        vec![
            spec("sibling", Behavior::Steady, &journal),
            spec("doomed", Behavior::FailAfter(Duration::ZERO), &journal),
        ],
        settings,
    );
    supervisor::start_all(&sup).await.unwrap();
    let s = wait_for(&sup, "doomed", Duration::from_secs(5), |s| {
        s.state == ServiceState::Failed
    })
    .await;
    assert!(s.last_error.unwrap().message.contains("giving up"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        journal.starts("doomed").len(),
        4,
        "initial start + 3 restarts, then left down"
    );
    assert_eq!(status(&sup, "doomed").await.state, ServiceState::Failed);
    assert_eq!(status(&sup, "sibling").await.state, ServiceState::Running);
    assert!(
        fatal.try_recv().is_err(),
        "an optional child must not stop the daemon"
    );
}

#[actix_rt::test]
async fn intensity_limit_on_a_critical_child_reports_a_fatal_failure() {
    let journal = Journal::default();
    let mut settings = fast_settings();
    settings.restart.intensity_max = 2;
    settings.restart.backoff_base = Duration::from_millis(5);
    let (sup, mut fatal) = start(
        vec![spec("vital", Behavior::FailAfter(Duration::ZERO), &journal).critical()],
        settings,
    );
    supervisor::start_all(&sup).await.unwrap();
    let f = tokio::time::timeout(Duration::from_secs(5), fatal.recv())
        .await
        .expect("fatal reported")
        .unwrap();
    assert_eq!(f.service, "vital");
    assert!(f.reason.contains("giving up"), "{}", f.reason);
}

#[actix_rt::test]
async fn children_start_in_spec_order_and_stop_in_reverse() {
    let journal = Journal::default();
    let (sup, _fatal) = start(
        vec![
            spec("a", Behavior::Steady, &journal),
            spec("b", Behavior::Steady, &journal),
            spec("c", Behavior::Steady, &journal),
        ],
        fast_settings(),
    );
    supervisor::start_all(&sup).await.unwrap();
    journal.wait_starts("c", 1, Duration::from_secs(2)).await;
    assert_eq!(journal.start_order(), vec!["a", "b", "c"]);
    let report = supervisor::shutdown(&sup, Duration::from_secs(5)).await;
    assert_eq!(report.stopped, vec!["c", "b", "a"]);
    assert_eq!(journal.stop_order(), vec!["c", "b", "a"]);
    assert!(
        report.cut_off.is_empty() && report.stragglers.is_empty(),
        "{report:?}"
    );
    for name in ["a", "b", "c"] {
        assert_eq!(status(&sup, name).await.state, ServiceState::Stopped);
    }
}

#[actix_rt::test]
async fn child_ignoring_stop_is_cut_off_at_its_timeout_and_named_in_the_log() {
    let logs = children::capture_logs();
    let journal = Journal::default();
    let stubborn =
        spec("stubborn", Behavior::IgnoreStop, &journal).stop_timeout(Duration::from_millis(100));
    let (sup, _fatal) = start(
        vec![spec("polite", Behavior::Steady, &journal), stubborn],
        fast_settings(),
    );
    supervisor::start_all(&sup).await.unwrap();
    journal
        .wait_starts("stubborn", 1, Duration::from_secs(2))
        .await;
    let began = Instant::now();
    let report = supervisor::shutdown(&sup, Duration::from_secs(5)).await;
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "took {:?}",
        began.elapsed()
    );
    assert_eq!(report.cut_off, vec!["stubborn"]);
    assert!(
        journal.stop_order().contains(&"polite".to_string()),
        "the polite child still stopped after the stubborn one was cut off"
    );
    let text = logs.text();
    assert!(
        text.contains("did not stop within its stop timeout") && text.contains("stubborn"),
        "{text}"
    );
}

#[actix_rt::test]
async fn overall_deadline_names_the_stragglers() {
    let logs = children::capture_logs();
    let journal = Journal::default();
    let stubborn =
        spec("stubborn", Behavior::IgnoreStop, &journal).stop_timeout(Duration::from_secs(30));
    let (sup, _fatal) = start(vec![stubborn], fast_settings());
    supervisor::start_all(&sup).await.unwrap();
    let began = Instant::now();
    let report = supervisor::shutdown(&sup, Duration::from_millis(200)).await;
    assert!(began.elapsed() < Duration::from_secs(2));
    assert_eq!(report.stragglers, vec!["stubborn"]);
    assert!(logs.text().contains("shutdown deadline reached"));
    assert_eq!(status(&sup, "stubborn").await.state, ServiceState::Stopped);
}

#[actix_rt::test]
async fn services_are_stopped_started_and_restarted_by_name() {
    let journal = Journal::default();
    let (sup, _fatal) = start(
        vec![
            spec("worker", Behavior::Steady, &journal),
            tipoff_actors::ChildSpec::skipped("off", "TIPOFF_OFF is not set"),
        ],
        fast_settings(),
    );
    supervisor::start_all(&sup).await.unwrap();
    journal
        .wait_starts("worker", 1, Duration::from_secs(2))
        .await;

    let stopped = sup
        .send(StopChild {
            name: "worker".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stopped.status.state, ServiceState::Stopped);
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        status(&sup, "worker").await.state,
        ServiceState::Stopped,
        "a stopped service stays down"
    );
    assert_eq!(journal.starts("worker").len(), 1);

    let started = sup
        .send(StartChild {
            name: "worker".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(started.state, ServiceState::Running);
    journal
        .wait_starts("worker", 2, Duration::from_secs(2))
        .await;

    let restarted = sup
        .send(RestartChild {
            name: "worker".into(),
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(restarted.restarts, 1);
    journal
        .wait_starts("worker", 3, Duration::from_secs(2))
        .await;

    let missing = sup
        .send(RestartChild {
            name: "nope".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        missing.unwrap_err(),
        SupervisorError::NotFound("nope".into())
    );
    let skipped = sup.send(StartChild { name: "off".into() }).await.unwrap();
    assert!(matches!(skipped, Err(SupervisorError::Skipped(..))));
    assert_eq!(
        status(&sup, "off").await.skip_reason.as_deref(),
        Some("TIPOFF_OFF is not set")
    );
}

#[actix_rt::test]
async fn restart_policies_decide_what_happens_after_an_exit() {
    let journal = Journal::default();
    let (sup, _fatal) = start(
        vec![
            spec(
                "transient-ok",
                Behavior::ExitAfter(Duration::from_millis(10)),
                &journal,
            )
            .restart(RestartPolicy::Transient),
            spec(
                "transient-err",
                Behavior::FailAfter(Duration::from_millis(10)),
                &journal,
            )
            .restart(RestartPolicy::Transient),
            spec(
                "temporary-err",
                Behavior::FailAfter(Duration::from_millis(10)),
                &journal,
            )
            .restart(RestartPolicy::Temporary),
            spec(
                "permanent-ok",
                Behavior::ExitAfter(Duration::from_millis(10)),
                &journal,
            ),
        ],
        fast_settings(),
    );
    supervisor::start_all(&sup).await.unwrap();
    wait_for(&sup, "transient-ok", Duration::from_secs(2), |s| {
        s.state == ServiceState::Stopped
    })
    .await;
    wait_for(&sup, "temporary-err", Duration::from_secs(2), |s| {
        s.state == ServiceState::Failed
    })
    .await;
    journal
        .wait_starts("transient-err", 2, Duration::from_secs(2))
        .await;
    journal
        .wait_starts("permanent-ok", 2, Duration::from_secs(2))
        .await;
    assert_eq!(journal.starts("transient-ok").len(), 1);
    assert_eq!(journal.starts("temporary-err").len(), 1);
}
