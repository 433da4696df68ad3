//! The driver on tokio's paused clock, routers joined by an in-memory
//! segment: election, takeover after a hard kill and after a priority-0
//! release, event ordering, demultiplexing.

use super::*;
use crate::machine::State;
use std::net::Ipv4Addr;
use std::sync::Mutex;

const VIP: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100));

/// A shared segment: whatever one router sends, every other one receives.
#[derive(Default)]
struct Segment {
    routers: Mutex<Vec<(IpAddr, mpsc::Sender<Command>)>>,
}

struct Nic {
    me: IpAddr,
    segment: Arc<Segment>,
}

impl AdvertSink for Nic {
    fn send(&self, payload: &[u8], dst: IpAddr) -> io::Result<()> {
        for (addr, tx) in self.segment.routers.lock().unwrap().iter() {
            if *addr != self.me {
                let _ = tx.try_send(Command::Packet {
                    port: 0,
                    packet: RxPacket {
                        src: self.me,
                        dst,
                        ttl: 255,
                        payload: payload.to_vec(),
                    },
                });
            }
        }
        Ok(())
    }
}

struct Router {
    addr: IpAddr,
    commands: mpsc::Sender<Command>,
    events: mpsc::UnboundedReceiver<HostEvent>,
    task: tokio::task::JoinHandle<()>,
}

fn config(addr: IpAddr, priority: u8) -> Config {
    let mut c = Config::new(51, addr, vec![VIP]);
    c.priority = priority;
    c.advert_interval = Duration::from_millis(100);
    c
}

fn start(segment: &Arc<Segment>, last_octet: u8, priority: u8) -> Router {
    let addr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, last_octet));
    let (tx, rx) = mpsc::channel(1024);
    let (etx, erx) = mpsc::unbounded_channel();
    let sink: Arc<dyn AdvertSink> = Arc::new(Nic {
        me: addr,
        segment: segment.clone(),
    });
    let driver = Driver::new(
        vec![InstanceSpec {
            name: "VI_1".into(),
            interface: "eth1".into(),
            port: 0,
            config: config(addr, priority),
        }],
        vec![],
        vec![sink],
        etx,
    )
    .expect("driver");
    segment.routers.lock().unwrap().push((addr, tx.clone()));
    Router {
        addr,
        commands: tx,
        events: erx,
        task: tokio::spawn(driver.run(rx)),
    }
}

async fn state(r: &Router) -> State {
    let (tx, rx) = oneshot::channel();
    r.commands.send(Command::Status(tx)).await.unwrap();
    rx.await.unwrap().instances[0].status.state
}

fn drain(r: &mut Router) -> Vec<HostEvent> {
    let mut out = Vec::new();
    while let Ok(e) = r.events.try_recv() {
        out.push(e);
    }
    out
}

fn added_vips(events: &[HostEvent]) -> bool {
    events
        .iter()
        .any(|e| matches!(&e.action, Action::AddVips { addresses, .. } if addresses == &[VIP]))
}

/// Kills a router the way `kill -9` does: it stops at once, sends nothing
/// more and hears nothing more.
fn kill(segment: &Segment, r: &Router) {
    r.task.abort();
    segment
        .routers
        .lock()
        .unwrap()
        .retain(|(a, _)| *a != r.addr);
}

#[tokio::test(start_paused = true)]
async fn two_routers_elect_the_higher_priority_and_a_hard_kill_moves_the_vips() {
    let segment = Arc::new(Segment::default());
    let mut a = start(&segment, 10, 150);
    let mut b = start(&segment, 11, 100);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state(&a).await, State::Master);
    assert_eq!(state(&b).await, State::Backup);
    let ea = drain(&mut a);
    assert!(added_vips(&ea), "{ea:#?}");
    // Events are numbered 1, 2, 3, ... and VIPs come before the
    // gratuitous messages that announce them.
    for (i, e) in ea.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
    let add = ea
        .iter()
        .position(|e| matches!(e.action, Action::AddVips { .. }));
    let garp = ea
        .iter()
        .position(|e| matches!(e.action, Action::SendGratuitous { .. }));
    assert!(add < garp && garp.is_some(), "{ea:#?}");
    assert!(!added_vips(&drain(&mut b)));

    kill(&segment, &a);
    // Master_Down_Interval = 3 * 100 ms + Skew_Time ((256-100)/256 * 100
    // ms = 60 ms) = 360 ms (RFC 5798 6.1).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state(&b).await, State::Backup, "took over too early");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state(&b).await, State::Master);
    assert!(added_vips(&drain(&mut b)));
}

#[tokio::test(start_paused = true)]
async fn shutdown_releases_with_priority_zero_and_the_backup_takes_over_after_skew_time() {
    let segment = Arc::new(Segment::default());
    let mut a = start(&segment, 10, 150);
    let mut b = start(&segment, 11, 100);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(state(&a).await, State::Master);
    drain(&mut a);
    drain(&mut b);
    let (tx, rx) = oneshot::channel();
    a.commands.send(Command::Shutdown(tx)).await.unwrap();
    rx.await.unwrap();
    segment
        .routers
        .lock()
        .unwrap()
        .retain(|(x, _)| *x != a.addr);
    let released = drain(&mut a);
    assert!(
        released
            .iter()
            .any(|e| matches!(e.action, Action::RemoveVips { .. })),
        "{released:#?}"
    );
    // RFC 5798 6.4.2: on a priority-0 advert the backup waits Skew_Time
    // (60 ms), not Master_Down_Interval.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(state(&b).await, State::Master);
}

#[tokio::test(start_paused = true)]
async fn foreign_vrids_are_counted_and_lateness_is_measured() {
    let segment = Arc::new(Segment::default());
    let a = start(&segment, 10, 150);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let foreign = crate::codec::Advert {
        version: crate::codec::Version::V3 {
            max_advert_int: 100,
        },
        vrid: 52,
        priority: 100,
        addresses: vec![VIP],
    };
    let src = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 99));
    let payload = codec::encode(&foreign, src, crate::codec::MULTICAST_V4.into()).unwrap();
    for bytes in [payload, vec![0x31]] {
        a.commands
            .send(Command::Packet {
                port: 0,
                packet: RxPacket {
                    src,
                    dst: crate::codec::MULTICAST_V4.into(),
                    ttl: 255,
                    payload: bytes,
                },
            })
            .await
            .unwrap();
    }
    let (tx, rx) = oneshot::channel();
    a.commands.send(Command::Status(tx)).await.unwrap();
    let snap = rx.await.unwrap();
    assert_eq!(snap.unknown_vrid, 2);
    assert_eq!(snap.instances[0].status.state, State::Master);
    // Master after Master_Down_Interval (about 360 ms), then an advert
    // every 100 ms: the timers fired, each one measured.
    assert!(snap.lateness.fired >= 6, "{:?}", snap.lateness);
    assert_eq!(
        snap.lateness.buckets.iter().sum::<u64>(),
        snap.lateness.fired
    );
}

#[test]
fn unknown_sync_group_members_and_bad_ports_are_refused() {
    let (etx, _erx) = mpsc::unbounded_channel();
    let addr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    let spec = |port| InstanceSpec {
        name: "VI_1".into(),
        interface: "eth1".into(),
        port,
        config: config(addr, 100),
    };
    let err = Driver::new(vec![spec(1)], vec![], vec![], etx.clone())
        .err()
        .unwrap();
    assert!(err.to_string().contains("port 1"), "{err}");
    let sink: Arc<dyn AdvertSink> = Arc::new(Nic {
        me: addr,
        segment: Arc::new(Segment::default()),
    });
    let err = Driver::new(
        vec![spec(0)],
        vec![GroupSpec {
            name: "G".into(),
            members: vec!["VI_1".into(), "VI_2".into()],
        }],
        vec![sink],
        etx,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("VI_2"), "{err}");
}
