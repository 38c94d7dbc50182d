//! The checkout aggregators a user would write instead of Manifold: the seed document's Flask
//! app under gunicorn, and an express app awaiting `Promise.all`.

use super::{first_program, port_or_skip, PeerCommand, Skipped};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The checkout upstreams, as environment variables for the aggregator peers.
fn upstream_env(up: &crate::aggregator::CheckoutUpstreams) -> Vec<(String, String)> {
    vec![
        ("ORDER_URL".into(), up.order.clone()),
        ("PAYMENT_URL".into(), up.payment.clone()),
        ("INVENTORY_URL".into(), up.inventory.clone()),
        ("SHIPPING_URL".into(), up.shipping.clone()),
    ]
}

/// The seed document's Flask aggregators (`POST /checkout` sequential, `POST
/// /checkout-threadpool`), served by gunicorn with 4 sync workers.
pub fn flask(
    dir: &Path,
    up: &crate::aggregator::CheckoutUpstreams,
) -> Result<PeerCommand, Skipped> {
    let port = port_or_skip("flask")?;
    let venv = dir.join(".venv/bin/gunicorn");
    let program = first_program(&[&venv, Path::new("gunicorn")]).unwrap_or(venv);
    Ok(PeerCommand {
        name: "flask".into(),
        program,
        args: vec![
            "--workers".into(),
            "4".into(),
            "--worker-class".into(),
            "sync".into(),
            "--bind".into(),
            format!("127.0.0.1:{port}"),
            "--backlog".into(),
            "4096".into(),
            "--log-level".into(),
            "warning".into(),
            "--chdir".into(),
            dir.display().to_string(),
            "flask_app:app".into(),
        ],
        env: upstream_env(up),
        cwd: None,
        requires: vec![dir.join("flask_app.py")],
        port,
        probe_path: "/healthz".into(),
        ready_timeout: Duration::from_secs(20),
        scratch: None,
    })
}

/// The express + `Promise.all` aggregator (`POST /checkout`).
pub fn node(dir: &Path, up: &crate::aggregator::CheckoutUpstreams) -> Result<PeerCommand, Skipped> {
    let port = port_or_skip("node")?;
    let mut env = upstream_env(up);
    env.push(("PORT".into(), port.to_string()));
    env.push(("HOST".into(), "127.0.0.1".into()));
    env.push(("NODE_ENV".into(), "production".into()));
    Ok(PeerCommand {
        name: "node".into(),
        program: first_program(&[Path::new("node"), Path::new("nodejs")])
            .unwrap_or_else(|| PathBuf::from("node")),
        // Relative to `cwd`: `dir` itself may be relative to ours.
        args: vec!["app.js".into()],
        env,
        cwd: Some(dir.join("node")),
        requires: vec![
            dir.join("node/app.js"),
            dir.join("node/node_modules/express/package.json"),
        ],
        port,
        probe_path: "/healthz".into(),
        ready_timeout: Duration::from_secs(20),
        scratch: None,
    })
}
