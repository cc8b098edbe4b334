//! `wattle sandbox` as a newcomer meets it: a standard MQTT client connects to its embedded
//! broker without choosing a client id, and the terminal shows the banner and progress lines
//! while the logs go to a file in the sandbox's directory.

use std::time::Duration;

use crate::support::{poll_until, wattle, Process, CLUSTER_SERIAL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standard_client_subscribes_without_a_client_id_and_logs_go_to_a_file() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("sandbox");
    let mut command = wattle();
    command.arg("sandbox").args(["--meters", "3"]).arg("--data-dir").arg(&data);
    let mut sandbox = Process::spawn("sandbox", dir.path(), command)?;
    let terminal = dir.path().join("sandbox.log");
    let port: u16 = poll_until("the sandbox's banner", Duration::from_secs(120), || async {
        let text = std::fs::read_to_string(&terminal).ok()?;
        let line = text.lines().find(|line| line.trim_start().starts_with("MQTT broker"))?;
        line.split_whitespace().nth(2)?.rsplit_once(':')?.1.parse().ok()
    })
    .await
    .map_err(|error| anyhow::anyhow!("{error}\n{}", sandbox.log_tail()))?;
    // mosquitto_sub sends a zero-length client id with a clean session unless given `-i`.
    let subscriber = tokio::process::Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-t", "wattle/#", "-C", "1", "-W", "60"])
        .kill_on_drop(true)
        .output()
        .await?;
    anyhow::ensure!(
        subscriber.status.success() && !subscriber.stdout.is_empty(),
        "mosquitto_sub without a client id got no message ({}): {}",
        subscriber.status,
        String::from_utf8_lossy(&subscriber.stderr)
    );
    sandbox.signal("INT")?;
    let status = sandbox.wait(Duration::from_secs(30)).await?;
    anyhow::ensure!(status.success(), "the sandbox stopped with {status}:\n{}", sandbox.log_tail());
    let shown = std::fs::read_to_string(&terminal)?;
    let logged = std::fs::read_to_string(data.join("sandbox.log"))?;
    anyhow::ensure!(logged.contains("INFO"), "no log lines in sandbox.log:\n{logged}");
    anyhow::ensure!(!shown.contains("INFO") && !shown.contains("WARN"), "log lines on the terminal:\n{shown}");
    // Secrets and customers' data are the owner's only (issue 15).
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |path: std::path::PathBuf| -> anyhow::Result<u32> { Ok(std::fs::metadata(path)?.permissions().mode() & 0o777) };
    for dir in ["", "node-1", "node-2", "node-3", "gateway"] {
        assert_eq!(mode(data.join(dir))?, 0o700, "{dir}/ is not 0700");
    }
    for key in [
        "operator.key",
        "service.key",
        "supplier.key",
        "grid.key",
        "regulator.key",
        "node-1/node.key",
        "gateway/gateway.key",
    ] {
        assert_eq!(mode(data.join(key))?, 0o600, "{key} is not 0600");
    }
    Ok(())
}

/// More meters than one Modbus server can address (247 units) split into sites; the smoke check
/// passes, the legacy meter's bill included (it failed with 1,000 meters: the one site's Modbus
/// server refused to start, and the legacy meter billed nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_larger_than_one_modbus_server_passes_the_smoke_check() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let mut command = wattle();
    command.arg("sandbox").args(["--meters", "250", "--exit-after-intervals", "4"]);
    command.arg("--data-dir").arg(dir.path().join("sandbox"));
    let mut sandbox = Process::spawn("sandbox", dir.path(), command)?;
    let status = sandbox.wait(Duration::from_secs(300)).await?;
    anyhow::ensure!(status.success(), "the smoke check failed ({status}):\n{}", sandbox.log_tail());
    Ok(())
}

/// Found while passing the sandbox's configuration through governance: a second run on the same
/// `--data-dir` chose new node ports, the raft membership in the data directory still named the
/// old ones, and the first proposal was answered `503 not_leader` (no quorum). The second run
/// must find its cluster, propose no configuration again, and pass the smoke check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_data_directory_finds_its_cluster() -> anyhow::Result<()> {
    let _serial = CLUSTER_SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    for run in ["first", "second"] {
        let mut command = wattle();
        command.arg("sandbox").args(["--meters", "4", "--exit-after-intervals", "2"]);
        command.arg("--data-dir").arg(dir.path().join("sandbox"));
        let mut sandbox = Process::spawn(&format!("sandbox-{run}"), dir.path(), command)?;
        let status = sandbox.wait(Duration::from_secs(300)).await?;
        anyhow::ensure!(status.success(), "the {run} run failed ({status}):\n{}", sandbox.log_tail());
        let output = std::fs::read_to_string(dir.path().join(format!("sandbox-{run}.log")))?;
        let configured = output.contains("configuration actions passed by proposal");
        anyhow::ensure!(configured == (run == "first"), "{run} run, configuration proposed: {configured}:\n{output}");
    }
    Ok(())
}
