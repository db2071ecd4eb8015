//! The lease's wire protocol (the data lives in the pure `quantshift-lease` crate) and the
//! parsing of the Lua scripts' replies (`src/scripts/lease_*.lua`), which needs the client's
//! reply type.

use redis::Value;

pub use quantshift_lease::protocol::*;

/// A command's reply, from what Redis answered.
pub fn parse_reply(command: &Command, value: Value) -> redis::RedisResult<Reply> {
    match command {
        Command::Observe { .. } => {
            let fields: Vec<Value> = redis::from_redis_value(value)?;
            Ok(Reply::Observed(parse_record(&fields)?))
        }
        Command::Renew { .. } => parse_renew(&redis::from_redis_value::<Vec<Value>>(value)?),
        Command::Take { .. } => parse_take(&redis::from_redis_value::<Vec<Value>>(value)?),
        Command::Release { .. } => Ok(Reply::Released {
            released: redis::from_redis_value::<i64>(value)? == 1,
        }),
    }
}

pub fn parse_record(fields: &[Value]) -> redis::RedisResult<Record> {
    let text = |i: usize| -> redis::RedisResult<Option<String>> {
        match fields.get(i) {
            None | Some(Value::Nil) => Ok(None),
            Some(value) => Ok(Some(redis::from_redis_value_ref::<String>(value)?)),
        }
    };
    let number = |i: usize| -> redis::RedisResult<u64> {
        Ok(text(i)?.and_then(|t| t.parse::<u64>().ok()).unwrap_or(0))
    };
    let Some(token) = text(0)? else {
        return Ok(Record::Absent);
    };
    let (seq, deadline_ms, epoch) = (number(1)?, number(2)?, number(3)?);
    if token.is_empty() {
        return Ok(Record::Released { seq, epoch });
    }
    Ok(Record::Held {
        token,
        seq,
        deadline_ms,
        epoch,
    })
}

/// `lease_renew.lua`: `{1, seq}` renewed, `{0}` refused.
pub fn parse_renew(reply: &[Value]) -> redis::RedisResult<Reply> {
    match reply {
        [code, seq] if int(code)? == 1 => Ok(Reply::Renewed {
            seq: int(seq)?.unsigned_abs(),
        }),
        [code, ..] if int(code)? == 0 => Ok(Reply::RenewRefused),
        _ => Err(unexpected("lease renewal")),
    }
}

/// `lease_take.lua`: `{1, epoch}` taken, `{0}` refused, `{2}` blocked by a foreign lock.
pub fn parse_take(reply: &[Value]) -> redis::RedisResult<Reply> {
    match reply {
        [code, epoch] if int(code)? == 1 => Ok(Reply::Taken {
            epoch: int(epoch)?.unsigned_abs(),
        }),
        [code, ..] if int(code)? == 0 => Ok(Reply::TakeRefused),
        [code, ..] if int(code)? == 2 => Ok(Reply::TakeBlocked),
        _ => Err(unexpected("lease take")),
    }
}

fn int(value: &Value) -> redis::RedisResult<i64> {
    Ok(redis::from_redis_value_ref::<i64>(value)?)
}

fn unexpected(what: &str) -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "unexpected reply from a lease script",
        what.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn records_parse_into_their_three_shapes() {
        assert_eq!(
            parse_record(&[Value::Nil, Value::Nil, Value::Nil, Value::Nil]).unwrap(),
            Record::Absent
        );
        assert_eq!(
            parse_record(&[bulk(""), bulk("7"), Value::Nil, bulk("3")]).unwrap(),
            Record::Released { seq: 7, epoch: 3 }
        );
        assert_eq!(
            parse_record(&[bulk("h:1:ab"), bulk("2"), bulk("300"), bulk("9")]).unwrap(),
            Record::Held {
                token: "h:1:ab".into(),
                seq: 2,
                deadline_ms: 300,
                epoch: 9
            }
        );
    }

    #[test]
    fn script_replies_parse_or_fail_clearly() {
        assert_eq!(
            parse_renew(&[Value::Int(1), Value::Int(5)]).unwrap(),
            Reply::Renewed { seq: 5 }
        );
        assert_eq!(parse_renew(&[Value::Int(0)]).unwrap(), Reply::RenewRefused);
        assert_eq!(
            parse_take(&[Value::Int(1), Value::Int(12)]).unwrap(),
            Reply::Taken { epoch: 12 }
        );
        assert_eq!(parse_take(&[Value::Int(0)]).unwrap(), Reply::TakeRefused);
        assert!(parse_take(&[]).is_err());
    }
}
