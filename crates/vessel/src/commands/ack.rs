//! `ack`: shore's acknowledgement watermark for the progress outbox, carried in a bundle (file
//! mode, or any time shore wants to confirm). Arguments: `acked_seq` (integer, the highest
//! progress batch sequence shore holds, every earlier one included) and optional `channel`
//! (default `outbox`). The watermark only rises; raising it deletes the acknowledged batches and
//! their records from the outbox in the same transaction.

use super::{Command, Ctx, Journal};
use crate::store::{CommandOutcome, Result};

/// The `ack` command.
pub struct Ack;

impl Command for Ack {
    fn kind(&self) -> &'static str {
        "ack"
    }

    fn changes_moodle(&self) -> bool {
        false
    }

    fn run(&self, ctx: &Ctx<'_>, j: &mut Journal<'_>) -> Result<CommandOutcome> {
        let Some(seq) = ctx
            .args
            .get("acked_seq")
            .and_then(serde_json::Value::as_u64)
        else {
            return Ok(CommandOutcome::Failed(
                "argument acked_seq is missing or not a non-negative integer".into(),
            ));
        };
        let channel = match ctx.args.get("channel") {
            None => "outbox",
            Some(v) => match v.as_str() {
                Some(s) if !s.is_empty() => s,
                _ => {
                    return Ok(CommandOutcome::Failed(
                        "argument channel must be a non-empty string".into(),
                    ));
                }
            },
        };
        if j.with(|tx| tx.raise_ack(channel, seq, &ctx.cmd.bundle_id, ctx.now))? {
            Ok(CommandOutcome::Done(format!(
                "shore acknowledged {channel} up to sequence {seq}"
            )))
        } else if ctx.cmd.late {
            Ok(CommandOutcome::Superseded(format!(
                "{channel} was already acknowledged at or beyond sequence {seq} by a newer bundle"
            )))
        } else {
            Ok(CommandOutcome::Done(format!(
                "{channel} was already acknowledged at or beyond sequence {seq}; nothing changed"
            )))
        }
    }
}
