use quantshift_core::{Config, StateManager};
use std::time::{Duration, Instant};
fn main() {
    let url = std::env::args().nth(1).unwrap();
    let n: usize = std::env::args().nth(2).unwrap().parse().unwrap();
    let sm = StateManager::new(
        Config::new(format!("prof{n}"))
            .redis_url(url)
            .install_signal_handlers(false),
    )
    .unwrap();
    assert!(sm.wait_until_primary(Some(Duration::from_secs(5))));
    let mut c = redis::Client::open(std::env::args().nth(3).unwrap())
        .unwrap()
        .get_connection()
        .unwrap();
    let v = r#"{"quantity":10,"entry_price":150.0,"stop_loss":145.0,"take_profit":160.0,"last_update":"2026-11-29T03:02:36.698995"}"#;
    let mut p = redis::pipe();
    for i in 0..n {
        p.cmd("SET")
            .arg(format!("bot:prof{n}:position:S{i:05}"))
            .arg(v)
            .ignore();
        p.cmd("SADD")
            .arg(format!("bot:prof{n}:positions"))
            .arg(format!("S{i:05}"))
            .ignore();
    }
    let _: () = p.query(&mut c).unwrap();
    sm.load_positions_raw().unwrap();
    let mut t = vec![];
    let mut ping = vec![];
    for _ in 0..200 {
        let s = Instant::now();
        let _: String = redis::cmd("PING").query(&mut c).unwrap();
        ping.push(s.elapsed());
        let s = Instant::now();
        let r = sm.load_positions_raw().unwrap();
        t.push(s.elapsed());
        assert_eq!(r.len(), n);
    }
    let keys: Vec<String> = (0..n)
        .map(|i| format!("bot:prof{n}:position:S{i:05}"))
        .collect();
    let mut m = vec![];
    let mut sm_t = vec![];
    for _ in 0..200 {
        let s = Instant::now();
        let r: Vec<Option<Vec<u8>>> = redis::cmd("MGET").arg(&keys).query(&mut c).unwrap();
        m.push(s.elapsed());
        assert_eq!(r.len(), n);
        let s = Instant::now();
        let r: Vec<Vec<u8>> = redis::cmd("SMEMBERS")
            .arg(format!("bot:prof{n}:positions"))
            .query(&mut c)
            .unwrap();
        sm_t.push(s.elapsed());
        assert_eq!(r.len(), n);
    }
    let mut buf = format!("*{n}\r\n").into_bytes();
    for _ in 0..n {
        buf.extend_from_slice(format!("${}\r\n{}\r\n", v.len(), v).as_bytes());
    }
    let s = Instant::now();
    for _ in 0..100 {
        let r = redis::parse_redis_value(&buf).unwrap();
        std::hint::black_box(r);
    }
    println!("parse of {} bytes: {:?}", buf.len(), s.elapsed() / 100);
    let big = "x".repeat(buf.len());
    let one = format!("${}\r\n{}\r\n", big.len(), big).into_bytes();
    let s = Instant::now();
    for _ in 0..100 {
        let r = redis::parse_redis_value(&one).unwrap();
        std::hint::black_box(r);
    }
    println!(
        "parse of one bulk of {} bytes: {:?}",
        one.len(),
        s.elapsed() / 100
    );
    m.sort();
    sm_t.sort();
    println!("plain mget {:?} smembers {:?}", m[100], sm_t[100]);
    t.sort();
    ping.sort();
    println!("n={n} rust ping {:?} load_raw {:?}", ping[100], t[100]);
    let mut t = vec![];
    for _ in 0..50 {
        let s = Instant::now();
        let r = sm.load_positions().unwrap();
        t.push(s.elapsed());
        assert_eq!(r.len(), n);
    }
    t.sort();
    println!("n={n} load (serde Value) {:?}", t[25]);
    sm.close().unwrap();
}
