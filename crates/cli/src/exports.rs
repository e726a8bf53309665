//! `mfsha exports reload`: every master re-reads its exports file (MooseFS: `mfsmaster
//! reload`). Each master reads its own file, so the tool asks each one in the list, and
//! says per master what it did; `mfsha exports check FILE` parses a file without a master.

use anyhow::{bail, Context};
use mfsha_proto::client::{ClientOp, ClientReply, MasterClient, Request};
use mfsha_proto::types::Status;

const ASK_LIMIT_MS: u64 = 5_000;

/// Asks every master of `masters` to re-read its exports file; fails if any did not.
pub async fn reload(masters: &str) -> anyhow::Result<()> {
    let mut failed = 0;
    for addr in crate::leader::master_list(masters) {
        match reload_one(&addr).await {
            Ok(line) => println!("{addr}: {line}"),
            Err(error) => {
                eprintln!("{addr}: {error:#}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} master(s) did not reload their exports (see above)");
    }
    Ok(())
}

async fn reload_one(addr: &str) -> anyhow::Result<String> {
    let client = MasterClient::connect(addr).await.context("cannot connect")?;
    let mut reply = ask(&client).await?;
    if reply == Err(Status::Access) {
        // Exports in force: this connection's Hello decides (its export must say `admin`).
        let info = format!("mfsha exports (pid {})", std::process::id());
        let hello = crate::leader::tool_hello(&client, 0, info, ASK_LIMIT_MS).await?;
        if let Err(status) = hello {
            if status != Status::NotLeader {
                bail!("refused a session: {status}{}", crate::leader::exports_hint(status));
            }
        }
        reply = ask(&client).await?;
    }
    match reply {
        Ok(ClientReply::ExportsReloaded(Ok(Some(lines)))) => {
            Ok(format!("exports reloaded ({lines} lines); they apply to every new session"))
        }
        Ok(ClientReply::ExportsReloaded(Ok(None))) => {
            Ok("its config names no exports file: every client may do everything".into())
        }
        Ok(ClientReply::ExportsReloaded(Err(error))) => {
            bail!("the file was refused, the exports before stay in force: {error}")
        }
        Ok(other) => bail!("answered the reload with {other:?}"),
        Err(Status::Perm) => bail!(
            "refused: only root may reload the exports, and under exports only from an \
             address whose export line says admin"
        ),
        Err(status) => bail!("refused the reload: {status}"),
    }
}

async fn ask(client: &MasterClient) -> anyhow::Result<mfsha_proto::types::Reply<ClientReply>> {
    let op = ClientOp::ReloadExports;
    let request = Request::anonymous(op);
    Ok(client.call_timeout(request, ASK_LIMIT_MS).await?)
}

/// Parses `file` as a master would; prints its lines or the first error (file:line:column).
pub fn check(file: &std::path::Path) -> anyhow::Result<()> {
    let exports = mfsha_master_ha::exports::Exports::load(file)?;
    println!("{}: {} lines, no error", file.display(), exports.rules.len());
    Ok(())
}
