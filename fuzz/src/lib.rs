//! The properties the fuzz targets check, shared by the libFuzzer targets (`cargo fuzz`) and
//! the stable-toolchain runner (`src/bin/smoke.rs`). Each `check_*` panics when a property
//! fails; the library itself must never panic on any input.

use quantshift_core::keys::{escape_glob, validate_bot_name, validate_symbol, Keys};
use quantshift_core::positions::{apply_fill_to, decode_object, diff_positions, JsonObject};
use quantshift_core::ErrorKind;
use serde_json::Value;

/// Redis' glob matching (`stringmatchlen` in util.c, case-sensitive), byte for byte, so the
/// patterns we build are checked against what the server would match.
pub fn glob_match(pattern: &[u8], string: &[u8]) -> bool {
    let (mut p, mut s) = (pattern, string);
    while !p.is_empty() && !s.is_empty() {
        match p[0] {
            b'*' => {
                while p.len() > 1 && p[1] == b'*' {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                return (0..s.len()).any(|i| glob_match(&p[1..], &s[i..]));
            }
            b'?' => s = &s[1..],
            b'[' => {
                p = &p[1..];
                let not = p.first() == Some(&b'^');
                if not {
                    p = &p[1..];
                }
                let mut matched = false;
                loop {
                    if p.len() >= 2 && p[0] == b'\\' {
                        p = &p[1..];
                        if p[0] == s[0] {
                            matched = true;
                        }
                    } else if p.first() == Some(&b']') {
                        break;
                    } else if p.is_empty() {
                        // Unterminated class: Redis steps back onto the last byte.
                        break;
                    } else if p.len() >= 3 && p[1] == b'-' {
                        let (mut lo, mut hi) = (p[0], p[2]);
                        if lo > hi {
                            std::mem::swap(&mut lo, &mut hi);
                        }
                        p = &p[2..];
                        if (lo..=hi).contains(&s[0]) {
                            matched = true;
                        }
                    } else if p[0] == s[0] {
                        matched = true;
                    }
                    p = &p[1..];
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s = &s[1..];
                if p.is_empty() {
                    // Consumed by an unterminated class.
                    return s.is_empty();
                }
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if p[0] != s[0] {
                    return false;
                }
                s = &s[1..];
            }
            c => {
                if c != s[0] {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
        if s.is_empty() {
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

fn unescape_glob(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.push(chars.next().expect("escape_glob left a trailing backslash"));
        } else {
            out.push(c);
        }
    }
    out
}

fn name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && !name.chars().any(char::is_control)
}

/// Splits fuzzer bytes into two strings (Rust callers can only pass UTF-8).
fn two_strings(data: &[u8]) -> (String, String) {
    let Some((&first, rest)) = data.split_first() else {
        return (String::new(), String::new());
    };
    let at = usize::from(first).min(rest.len());
    (
        String::from_utf8_lossy(&rest[..at]).into_owned(),
        String::from_utf8_lossy(&rest[at..]).into_owned(),
    )
}

/// Name and symbol validation against a plain statement of the rules, glob escaping
/// round-trips and matches exactly the escaped text in Redis' matcher, and a bot's keys
/// never belong to another bot.
pub fn check_names(data: &[u8]) {
    let (a, b) = two_strings(data);
    for text in [&a, &b] {
        let bot = validate_bot_name(text);
        assert_eq!(
            bot.is_ok(),
            name_ok(text) && !text.contains(':'),
            "bot name {text:?}: {bot:?}"
        );
        if let Err(err) = bot {
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            assert!(!err.message().is_empty());
        }
        let symbol = validate_symbol(text);
        assert_eq!(symbol.is_ok(), name_ok(text), "symbol {text:?}: {symbol:?}");
        let escaped = escape_glob(text);
        assert_eq!(&unescape_glob(&escaped), text);
        assert!(
            glob_match(escaped.as_bytes(), text.as_bytes()),
            "{escaped:?} does not match {text:?}"
        );
    }
    // An escaped text matches only itself.
    assert_eq!(
        glob_match(escape_glob(&a).as_bytes(), b.as_bytes()),
        a == b,
        "pattern {:?} vs {b:?}",
        escape_glob(&a)
    );
    if validate_bot_name(&a).is_ok() && validate_symbol(&b).is_ok() {
        let keys = Keys::new(&a);
        let key = keys.position(&b);
        assert_eq!(keys.symbol_of(&key), Some(b.as_str()));
        assert!(glob_match(
            keys.position_pattern().as_bytes(),
            key.as_bytes()
        ));
        // Another bot (a name one character longer or shorter) never sees this key.
        let mut longer = a.clone();
        longer.push('x');
        let shorter: String = a
            .chars()
            .take(a.chars().count().saturating_sub(1))
            .collect();
        for other in [longer, shorter, b.clone()] {
            if other == a || validate_bot_name(&other).is_err() {
                continue;
            }
            let theirs = Keys::new(&other);
            assert_eq!(theirs.symbol_of(&key), None, "bot {other:?} reads {key:?}");
            assert!(
                !glob_match(theirs.position_pattern().as_bytes(), key.as_bytes()),
                "the pattern of bot {other:?} matches {key:?}"
            );
        }
    }
}

/// Any bytes stored under our keys decode to an object or a `CorruptData` error; decoded
/// objects round-trip, and the fill arithmetic and the broker diff never panic on them.
pub fn check_decode(data: &[u8]) {
    let decoded = decode_object("bot:x:position:S", data);
    let expected_object = matches!(serde_json::from_slice::<Value>(data), Ok(Value::Object(_)));
    assert_eq!(decoded.is_ok(), expected_object);
    let object = match decoded {
        Ok(object) => object,
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::CorruptData);
            assert!(err.message().contains("bot:x:position:S"));
            return;
        }
    };
    let text = serde_json::to_string(&object).unwrap();
    assert_eq!(decode_object("k", text.as_bytes()).unwrap(), object);
    match apply_fill_to("S", Some(&object), 1.0, 100.0) {
        Ok(Some(position)) => {
            let q = position["quantity"].as_f64().unwrap();
            assert!(q.is_finite() && q != 0.0);
        }
        Ok(None) => {}
        Err(err) => assert!(
            matches!(err.kind(), ErrorKind::CorruptData | ErrorKind::InvalidInput),
            "{err:?}"
        ),
    }
    let stored = vec![("S".to_owned(), object.clone())];
    let _ = diff_positions(&stored, &stored, "t");
    let _ = diff_positions(&[], &stored, "t");
}

const SPECIAL: [f64; 8] = [
    f64::NAN,
    f64::INFINITY,
    f64::NEG_INFINITY,
    0.0,
    -0.0,
    f64::MAX,
    f64::MIN_POSITIVE,
    5e-324,
];
const SCALES: [f64; 8] = [1.0, 0.5, 0.001, 1e-8, 1e6, 1e15, 1e300, 3.0];

fn number(position: &JsonObject, field: &str) -> Option<f64> {
    position.get(field).and_then(Value::as_f64)
}

/// A sequence of fills: never a panic; invalid numbers refused with the position unchanged;
/// the quantity held equals the sum of the fills applied since it was last flat (within
/// rounding); a flat result is `None` and only then; the entry price stays between the
/// prices it averages; realized P&L stays finite; other fields are kept.
pub fn check_fills(data: &[u8]) {
    let mut position: Option<JsonObject> = None;
    // Sum of the fills applied since the position was last flat, and their magnitudes.
    let (mut sum, mut magnitude) = (0.0f64, 0.0f64);
    for chunk in data.chunks_exact(4) {
        let (mode, q, p, s) = (chunk[0], chunk[1], chunk[2], chunk[3]);
        let quantity = if mode % 8 == 0 {
            SPECIAL[usize::from(q) % SPECIAL.len()]
        } else {
            f64::from(q as i8) * SCALES[usize::from(s) % SCALES.len()]
        };
        let price = if mode % 16 == 1 {
            SPECIAL[usize::from(p) % SPECIAL.len()]
        } else {
            f64::from(p) * SCALES[usize::from(mode >> 5) % SCALES.len()]
        };
        let held = position
            .as_ref()
            .map_or(0.0, |p| number(p, "quantity").unwrap());
        let old_entry = position.as_ref().and_then(|p| number(p, "entry_price"));
        let result = apply_fill_to("S", position.as_ref(), quantity, price);
        if !quantity.is_finite() || quantity == 0.0 || !price.is_finite() {
            let err = result.expect_err("a non-finite or zero fill was accepted");
            assert_eq!(err.kind(), ErrorKind::InvalidInput);
            continue;
        }
        let next = match result {
            Ok(next) => next,
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err:?}");
                assert!(err.message().contains("overflows"), "{err:?}");
                continue;
            }
        };
        let new_sum = sum + quantity;
        let new_magnitude = magnitude + quantity.abs();
        let tolerance = 1e-9 * new_magnitude.max(f64::MIN_POSITIVE);
        let flat_bound = 1e-9 * held.abs().max(quantity.abs());
        match next {
            None => {
                assert!(
                    (held + quantity).abs() <= flat_bound,
                    "None although {held} + {quantity} is not flat"
                );
                assert!(
                    new_sum.abs() <= tolerance + flat_bound,
                    "flat, but the fills sum to {new_sum}"
                );
                position = None;
                sum = 0.0;
                magnitude = 0.0;
            }
            Some(next) => {
                let q = number(&next, "quantity").expect("a quantity");
                assert!(q.is_finite() && q != 0.0, "quantity {q}");
                assert!(q.abs() > flat_bound, "flat quantity {q} kept");
                assert!(
                    (q - new_sum).abs() <= tolerance,
                    "quantity {q} but the fills sum to {new_sum}"
                );
                let entry = number(&next, "entry_price").expect("an entry price");
                assert!(entry.is_finite());
                let adding = held == 0.0 || held.signum() == quantity.signum();
                // Weighted sums of sizes × prices below the smallest normal number lose
                // their precision; the range is checked where the products are normal.
                let underflows = |a: f64, b: f64| a != 0.0 && b != 0.0 && !(a * b).is_normal();
                if held == 0.0 {
                    assert_eq!(entry, price, "a new position must enter at the fill price");
                } else if adding
                    && (underflows(held, old_entry.unwrap_or(price)) || underflows(quantity, price))
                {
                    // Not judged: precision lost to subnormal products.
                } else if adding {
                    let lo = old_entry.unwrap_or(price).min(price);
                    let hi = old_entry.unwrap_or(price).max(price);
                    let slack = 1e-9 * lo.abs().max(hi.abs()).max(1.0);
                    assert!(
                        entry >= lo - slack && entry <= hi + slack,
                        "entry {entry} outside [{lo}, {hi}]"
                    );
                } else if q.signum() == held.signum() {
                    assert_eq!(Some(entry), old_entry, "a reduction moved the entry price");
                } else {
                    assert_eq!(entry, price, "a flip must enter at the fill price");
                }
                if let Some(pnl) = next.get("realized_pnl") {
                    assert!(
                        pnl.as_f64().is_some_and(f64::is_finite),
                        "realized_pnl {pnl}"
                    );
                }
                if let Some(old) = &position {
                    for (field, value) in old {
                        if !matches!(field.as_str(), "quantity" | "entry_price" | "realized_pnl") {
                            assert_eq!(next.get(field), Some(value), "{field} lost");
                        }
                    }
                }
                sum = new_sum;
                magnitude = new_magnitude;
                position = Some(next);
            }
        }
    }
}
