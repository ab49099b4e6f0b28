//! Unit tests of crates/queue/src/ready.rs.
use super::*;
use crate::held::Held;
use hermod_message::{EnvelopeAddress, SpoolId};
use hermod_policy::QueueConfig;

fn entry(sq: &Arc<ScheduledQueue>) -> Queued {
    Queued::loaded(
        Message::new(
            SpoolId::new(),
            EnvelopeAddress::parse("a@b.c").unwrap(),
            vec![EnvelopeAddress::parse("x@nats").unwrap()],
            Default::default(),
            &b"Subject: t\r\n\r\nx"[..],
        ),
        sq.clone(),
    )
}

fn queue(idle: Duration) -> (Arc<ReadyQueue>, Arc<ScheduledQueue>) {
    let rq = ReadyQueue::new(
        "unspecified->nats@lua:make.nats".into(),
        EgressPathKey {
            routing_domain: "nats".into(),
            source: "unspecified".into(),
            site: "nats".into(),
        },
        "unspecified".into(),
        ProtocolConfig::Smtp,
    );
    rq.set_limits(ReadyLimits {
        idle_timeout: idle,
        ..ReadyLimits::default()
    });
    let sq = Arc::new(crate::resolve::new_scheduled(
        "nats",
        QueueConfig::default(),
    ));
    (Arc::new(rq), sq)
}

#[tokio::test]
async fn a_full_batch_is_returned_at_once_and_capped_at_batch_size() {
    let (rq, sq) = queue(Duration::from_secs(5));
    for _ in 0..7 {
        assert!(rq.push(entry(&sq)).is_ok());
    }
    let started = Instant::now();
    assert_eq!(rq.next_batch(5, 5, Duration::from_secs(10)).await.len(), 5);
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(rq.len(), 2);
}

#[tokio::test]
async fn below_min_batch_size_waits_for_max_batch_latency_then_sends_what_it_has() {
    let (rq, sq) = queue(Duration::from_secs(5));
    assert!(rq.push(entry(&sq)).is_ok());
    assert!(rq.push(entry(&sq)).is_ok());
    let started = Instant::now();
    let batch = rq.next_batch(10, 5, Duration::from_millis(300)).await;
    let waited = started.elapsed();
    assert_eq!(batch.len(), 2);
    assert!(waited >= Duration::from_millis(280), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[tokio::test]
async fn a_batch_completes_as_soon_as_min_batch_size_arrives() {
    let (rq, sq) = queue(Duration::from_secs(5));
    assert!(rq.push(entry(&sq)).is_ok());
    let rq2 = rq.clone();
    let sq2 = sq.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..3 {
            assert!(rq2.push(entry(&sq2)).is_ok());
        }
    });
    let started = Instant::now();
    let batch = rq.next_batch(10, 4, Duration::from_secs(3)).await;
    assert_eq!(batch.len(), 4);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn an_idle_queue_ends_the_session_after_idle_timeout() {
    let (rq, _sq) = queue(Duration::from_millis(200));
    let started = Instant::now();
    assert!(rq.next_batch(1, 1, Duration::ZERO).await.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(190));
}

#[tokio::test]
async fn closing_returns_pending_entries_to_the_queue() {
    let (rq, sq) = queue(Duration::from_secs(5));
    assert!(rq.push(entry(&sq)).is_ok());
    rq.close();
    assert!(rq
        .next_batch(10, 5, Duration::from_secs(1))
        .await
        .is_empty());
    assert_eq!(rq.len(), 1, "nothing may be lost when a queue closes");
}

#[tokio::test]
async fn repeated_failures_pause_the_queue_and_a_success_resumes_it() {
    let (rq, sq) = queue(Duration::from_secs(5));
    for _ in 0..10 {
        assert!(rq.push(entry(&sq)).is_ok());
    }
    rq.record_failure("broker down");
    rq.record_failure("broker down");
    assert_eq!(rq.state(), ReadyQueueState::Active);
    rq.record_failure("broker down");
    assert!(matches!(rq.state(), ReadyQueueState::Paused { .. }));
    assert_eq!(
        rq.wanted_sessions(),
        1,
        "a paused queue keeps one probing session"
    );
    // The first session becomes the prober and waits out the 1 s pause;
    // a second one ends at once without taking messages.
    let prober = {
        let rq = rq.clone();
        tokio::spawn(async move { rq.next_batch(1, 1, Duration::ZERO).await.len() })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rq.next_batch(1, 1, Duration::ZERO).await.is_empty());
    assert_eq!(rq.len(), 10, "paused messages wait without attempts");
    assert_eq!(prober.await.unwrap(), 1);
    assert!(rq.record_success(), "the probe's success ends the pause");
    assert!(!rq.record_success(), "a success while active ends no pause");
    assert_eq!(rq.state(), ReadyQueueState::Active);
}

#[test]
fn wanted_sessions_grow_with_depth_but_never_exceed_the_limit() {
    let (rq, sq) = queue(Duration::from_secs(5));
    assert_eq!(rq.wanted_sessions(), 0);
    assert!(rq.push(entry(&sq)).is_ok());
    assert_eq!(rq.wanted_sessions(), 1);
    for _ in 0..5000 {
        assert!(rq.push(entry(&sq)).is_ok());
    }
    assert_eq!(rq.wanted_sessions(), rq.limits().connection_limit);
}

#[test]
fn a_batching_queue_wants_sessions_for_its_batches_not_its_messages() {
    let (rq, sq) = queue(Duration::from_secs(5));
    let lua = mlua::Lua::new();
    let v: mlua::Value = lua
        .load("return { protocol = { custom_lua = { constructor = 'make.x', batch_size = 100 } } }")
        .eval()
        .unwrap();
    let cfg: QueueConfig = hermod_policy::config::from_lua_strict(&lua, v, "t").unwrap();
    rq.set_protocol(cfg.protocol);
    for _ in 0..512 {
        assert!(rq.push(entry(&sq)).is_ok());
    }
    // Six batches of up to 100: at most six sessions, where messages alone would ask for 32.
    let wanted = rq.wanted_sessions();
    assert!((1..=6).contains(&wanted), "{wanted}");
    for _ in 0..5000 {
        assert!(rq.push(entry(&sq)).is_ok());
    }
    assert!(rq.wanted_sessions() <= rq.limits().connection_limit);
}

#[tokio::test]
async fn only_an_idle_empty_queue_retires_and_a_retired_queue_gives_messages_back() {
    let (rq, sq) = queue(Duration::from_millis(50));
    assert!(rq.push(entry(&sq)).is_ok());
    assert!(
        !rq.retire_if_idle(Duration::ZERO),
        "a queue holding a message stays"
    );
    assert_eq!(rq.next_batch(1, 1, Duration::ZERO).await.len(), 1);
    assert!(!rq.retire_if_idle(Duration::from_secs(60)), "recently used");
    rq.sessions.store(1, Ordering::SeqCst);
    assert!(!rq.retire_if_idle(Duration::ZERO), "a session is running");
    rq.sessions.store(0, Ordering::SeqCst);
    assert!(rq.retire_if_idle(Duration::ZERO));
    assert!(rq.is_retired());
    let back = rq.push(entry(&sq));
    assert!(back.is_err(), "a retired queue must hand the message back");
    assert_eq!(rq.len(), 0);
}

#[test]
fn messages_beyond_max_ready_wait_as_ids_unless_the_spool_lacks_them() {
    let (rq, sq) = queue(Duration::from_secs(5));
    let max_ready = rq.limits().max_ready;
    for _ in 0..max_ready + 1 {
        let e = entry(&sq);
        if let Held::Loaded(m) = &e.held {
            m.mark_clean();
        }
        assert!(rq.push(e).is_ok());
    }
    // Never stored: the spool has nothing to read back, so it stays whole.
    let unsaved = entry(&sq);
    let unsaved_id = unsaved.held.id();
    assert!(rq.push(unsaved).is_ok());
    let g = rq.entries.lock();
    let held: Vec<&Held> = g.queue.iter().map(|e| &e.held).collect();
    assert!(
        held[..max_ready].iter().all(|h| h.loaded().is_some()),
        "messages within max_ready stay in memory"
    );
    assert!(
        matches!(held[max_ready], Held::Parked(..)),
        "a stored message beyond max_ready waits as its id"
    );
    let last = held[max_ready + 1];
    assert_eq!(last.id(), unsaved_id);
    assert!(
        last.loaded().is_some_and(|m| m.is_data_loaded()),
        "a message the spool lacks keeps its bytes"
    );
}

#[tokio::test]
async fn an_operator_hold_takes_no_batch_and_take_matching_keeps_the_rest_in_order() {
    let (rq, sq) = queue(Duration::from_millis(50));
    let other = Arc::new(crate::resolve::new_scheduled(
        "other",
        QueueConfig::default(),
    ));
    let (a, b, c) = (entry(&sq), entry(&other), entry(&sq));
    let (ida, idb, idc) = (a.held.id(), b.held.id(), c.held.id());
    for e in [a, b, c] {
        assert!(rq.push(e).is_ok());
    }
    rq.set_admin_hold(Some(("maintenance".into(), std::time::SystemTime::now())));
    assert!(rq.next_batch(10, 1, Duration::ZERO).await.is_empty());
    assert_eq!(
        rq.state(),
        ReadyQueueState::Suspended {
            reason: "maintenance".into()
        }
    );
    assert_eq!(rq.conditions()[0].name, "suspended");
    let taken = rq.take_matching(|q| q.queue.name == "nats");
    let taken: Vec<SpoolId> = taken.iter().map(|q| q.held.id()).collect();
    assert_eq!(taken, [ida, idc]);
    rq.set_admin_hold(None);
    let left = rq.next_batch(10, 1, Duration::ZERO).await;
    assert_eq!(left.iter().map(|q| q.held.id()).collect::<Vec<_>>(), [idb]);
}
