//! The fuzz properties on the stable toolchain, without coverage guidance: seeded random
//! inputs and mutations (bit flips, byte insertions and deletions, splices) of a seed corpus
//! of tricky values, for a bounded time per target. A failing input is printed in hex, with
//! the seed, so it can be replayed (`smoke <seconds> <seed>`) or fed to `cargo fuzz run`.
//!
//! Usage: `smoke [seconds per target] [seed]`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// splitmix64: small, seedable, good enough to drive mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let texts: &[&str] = &[
        "",
        "AAPL",
        "BTC/USD",
        "ES:FUT",
        "bot:x:state",
        "日本株",
        "a*b?[c]\\",
        "[^a-z]*",
        "\\",
        "x\u{1f}y",
        "\u{85}",
        "é",
        "{}",
        "[]",
        "null",
        "{\"quantity\": 10, \"entry_price\": 150.5, \"realized_pnl\": -3}",
        "{\"quantity\": \"ten\"}",
        "{\"quantity\": 1e308, \"entry_price\": 1e308}",
        "{\"quantity\": NaN}",
        "{\"a\": {\"b\": [1, 2, {\"c\": null}]}, \"quantity\": -0.0}",
        "{\"quantity\": 12345678901234567890}",
        "{\"k\": \"\\ud800\"}",
    ];
    let mut out: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
    out.push(vec![0xff, 0xfe, b'{', b'}']);
    out.push(vec![b'x'; 300]);
    out.push((0u8..=255).collect());
    out
}

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>]) -> Vec<u8> {
    if rng.below(8) == 0 {
        let len = rng.below(300);
        return (0..len).map(|_| rng.byte()).collect();
    }
    let mut data = corpus[rng.below(corpus.len())].clone();
    for _ in 0..=rng.below(6) {
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(data.len() + 1);
                data.insert(i, rng.byte());
            }
            2 if !data.is_empty() => {
                let i = rng.below(data.len());
                data.remove(i);
            }
            3 => {
                let other = &corpus[rng.below(corpus.len())];
                let from = rng.below(other.len() + 1);
                let to = from + rng.below(other.len() - from + 1);
                let at = rng.below(data.len() + 1);
                data.splice(at..at, other[from..to].iter().copied());
            }
            4 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = *b"*?[]\\:^-/\"{}".get(rng.below(12)).unwrap_or(&b'*');
            }
            _ => {
                let i = rng.below(data.len() + 1);
                data.truncate(i);
            }
        }
    }
    data
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    });
    println!("fuzz smoke run: {seconds} s per target, seed {seed}");
    type Check = fn(&[u8]);
    let targets: [(&str, Check); 3] = [
        ("names", quantshift_core_fuzz::check_names),
        ("decode", quantshift_core_fuzz::check_decode),
        ("fills", quantshift_core_fuzz::check_fills),
    ];
    // Quiet panics: a failure is reported once, below, with its input.
    std::panic::set_hook(Box::new(|_| {}));
    let mut failed = false;
    for (name, check) in targets {
        let mut rng = Rng(seed ^ name.len() as u64);
        let mut corpus = seeds();
        let started = Instant::now();
        let mut runs: u64 = 0;
        while started.elapsed() < Duration::from_secs(seconds) && runs < 50_000_000 {
            let input = mutate(&mut rng, &corpus);
            runs += 1;
            if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&input))) {
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
                println!("{name}: FAILED after {runs} inputs (seed {seed}): {message}");
                println!("{name}: input (hex) {hex}");
                failed = true;
                break;
            }
            // Keep some inputs as material for later mutations.
            if runs.is_multiple_of(64) && corpus.len() < 4096 {
                corpus.push(input);
            }
        }
        println!(
            "{name}: {runs} inputs in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    if failed {
        std::process::exit(1);
    }
}
