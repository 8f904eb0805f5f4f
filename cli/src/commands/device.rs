//! `edgefn device add|list|remove`.

use std::io::Write;

use edgefn_schema::MqttUrl;
use edgefn_schema::api::{DeviceInfo, DeviceRegistered, NewDevice};

use crate::args::{DeviceAddArgs, DeviceCommand, DeviceListArgs, DeviceRemoveArgs, Output};
use crate::client::Client;
use crate::edit;
use crate::error::{CliError, CliResult, Outcome};
use crate::project::{self, Project};

/// Runs a `device` subcommand.
pub(crate) fn run(cmd: &DeviceCommand) -> CliResult {
    match cmd {
        DeviceCommand::Add(a) => add(a),
        DeviceCommand::List(a) => list(a),
        DeviceCommand::Remove(a) => remove(a),
    }
}

fn parse_labels(labels: &[String]) -> Result<Vec<(String, String)>, CliError> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
                Ok((k.to_owned(), v.to_owned()))
            }
            _ => Err(CliError::InvalidArgument {
                message: format!("`{l}` is not a label"),
                help: "write labels as --label key=value".into(),
            }),
        })
        .collect()
}

fn add(args: &DeviceAddArgs) -> CliResult {
    if !edgefn_schema::manifest::valid_name(&args.name) {
        return Err(CliError::InvalidArgument {
            message: format!("`{}` is not a valid device name", args.name),
            help: "a device name uses lowercase letters, digits, `-` and `_`, starts and ends with a letter or digit, and has at most 63 characters".into(),
        });
    }
    let labels = parse_labels(&args.labels)?;
    let out_path = match &args.out {
        Some(p) => p.clone(),
        None => crate::client::config_dir()
            .ok_or_else(|| CliError::InvalidArgument {
                message: "no place for the agent's configuration: neither XDG_CONFIG_HOME nor HOME is set".into(),
                help: "name the file with --out FILE (outside the project: it holds a token)".into(),
            })?
            .join("devices")
            .join(format!("{}.yaml", args.name)),
    };
    if out_path.exists() && !args.force {
        return Err(CliError::Exists {
            path: out_path,
            hint: "choose another --out file, or pass --force".into(),
        });
    }
    // The manifest edit is prepared (and checked) before anything is registered.
    let project = match (&args.file, Project::locate(args.file.as_deref())) {
        (_, Ok(p)) => Some(p),
        (Some(_), Err(e)) => return Err(e),
        (None, Err(_)) => None,
    };
    let edited = match &project {
        Some(p) => {
            let text = p.read_manifest()?;
            let fields = if labels.is_empty() {
                Vec::new()
            } else {
                let inner: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", yaml_scalar(v)))
                    .collect();
                vec![("labels", format!("{{ {} }}", inner.join(", ")))]
            };
            match edit::add_entry(text.text(), "devices", &args.name, &fields) {
                Ok(t) => Some(t),
                Err(edit::EditError::Exists(_)) if labels.is_empty() => None,
                // Already declared with these labels (as `edgefn init` declares dev-01): nothing
                // to add.
                Err(edit::EditError::Exists(_))
                    if edgefn_schema::load(&text, None).ok().is_some_and(|l| {
                        l.manifest
                            .devices
                            .get(&args.name)
                            .is_some_and(|d| labels.iter().all(|(k, v)| d.labels.get(k) == Some(v)))
                    }) =>
                {
                    None
                }
                Err(edit::EditError::Exists(_)) => {
                    return Err(CliError::InvalidArgument {
                        message: format!(
                            "device `{}` is already in {}",
                            args.name,
                            p.manifest_path.display()
                        ),
                        help: "edit its labels there, and drop --label here".into(),
                    });
                }
                Err(source) => {
                    return Err(CliError::Edit {
                        source,
                        help: "add the device under `devices:` by hand".into(),
                    });
                }
            }
        }
        None => None,
    };
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let (_, reg): (_, DeviceRegistered) = client.post(
        "/v1/devices",
        &NewDevice {
            name: args.name.clone(),
        },
    )?;
    let mut config = format!(
        "# edgefn-agent configuration for device `{name}`. Keep it secret: it holds the device's token.\n# Run: edgefn-agent --config {file}\ncloud: {cloud}\ndevice: {name}\ntoken: {token}\n",
        name = reg.name,
        file = out_path.display(),
        cloud = client.base(),
        token = reg.token,
    );
    match &reg.mqtt {
        Some(url) => config.push_str(&format!("mqtt: {url}\n")),
        // The address written out, not left to a default: an agent on the cloud's own host
        // must see that the broker is there (it never takes that address for itself).
        None => config.push_str(&format!(
            "mqtt: {}   # the cloud's broker: its host, the port it listens on (edgefn-cloud --device-mqtt-url sets another)\n",
            MqttUrl {
                tls: false,
                host: cloud_host(client.base())
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port: reg.mqtt_port.unwrap_or(edgefn_schema::mqtt_url::MQTT_PORT),
                username: None,
                password: None,
            }
        )),
    }
    if client.base().starts_with("https://")
        || reg
            .mqtt
            .as_deref()
            .and_then(|u| MqttUrl::parse(u).ok())
            .is_some_and(|u| u.tls)
    {
        config.push_str(
            "# cloudCa: /etc/edgefn/ca.pem      # the CA's certificate, if the cloud's comes from a private CA\n",
        );
    }
    config.push_str("# data: /var/lib/edgefn-agent   # where releases and state live\n# sandbox: auto                 # container, process or auto\n# localMqtt: 127.0.0.1:1883     # the local MQTT listener for programs on the device, or none\n");
    if let Some(dir) = out_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            project::create_private_folder(dir)?;
        }
    }
    // Inside a git work tree, the file is ignored before it exists, so no `git add -A` can
    // take the token into the repository.
    let ignored_in = crate::provenance::ignore(&out_path).map_err(CliError::io(
        "add the agent's configuration to",
        ".gitignore",
    ))?;
    project::write_secret(&out_path, config.as_bytes())?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "registered device `{}`; its agent configuration is in {} (mode 0600; it holds the device's token: copy it to the device, keep it out of git)",
        reg.name,
        out_path.display()
    );
    if let Some(gitignore) = ignored_in {
        let _ = writeln!(
            out,
            "added it to {} so that git never takes the token",
            gitignore.display()
        );
    }
    if let (Some(p), Some(text)) = (&project, edited) {
        project::write_atomic(&p.manifest_path, text.as_bytes())?;
        let _ = writeln!(
            out,
            "added `{}` to {}: commit and apply to give it functions",
            reg.name,
            p.manifest_path.display()
        );
    }
    Ok(Outcome::Success)
}

fn yaml_scalar(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && v.parse::<f64>().is_err()
        && !matches!(v, "true" | "false" | "null" | "yes" | "no");
    if plain {
        v.to_owned()
    } else {
        serde_json::to_string(v).expect("string")
    }
}

fn list(args: &DeviceListArgs) -> CliResult {
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    let devices: Vec<DeviceInfo> = client.get("/v1/devices")?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            let _ = writeln!(
                out,
                "{}",
                serde_json::to_string_pretty(&devices).expect("json")
            );
        }
        Output::Text => {
            if devices.is_empty() {
                eprintln!("no device is registered: `edgefn device add NAME` registers one");
            }
            for d in &devices {
                let _ = writeln!(out, "{}", d.name);
            }
        }
    }
    Ok(Outcome::Success)
}

fn remove(args: &DeviceRemoveArgs) -> CliResult {
    let client = Client::from_args(args.cloud.cloud.as_deref(), args.cloud.token.as_deref())?;
    client.delete(&format!("/v1/devices/{}", args.name))?;
    let _ = writeln!(
        std::io::stdout().lock(),
        "removed device `{}`; its token no longer works",
        args.name
    );
    Ok(Outcome::Success)
}

/// The host of a control plane URL (`https://cloud.example.com:7070/` → `cloud.example.com`,
/// `http://[::1]:7070` → `[::1]`).
fn cloud_host(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &authority[..h.len() + 1]);
    }
    authority.split(':').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    use super::cloud_host;

    #[test]
    fn the_broker_host_is_the_clouds() {
        assert_eq!(
            cloud_host("https://cloud.example.com:7070/"),
            "cloud.example.com"
        );
        assert_eq!(cloud_host("http://127.0.0.1:7070"), "127.0.0.1");
        assert_eq!(cloud_host("http://[::1]:7070"), "[::1]");
        assert_eq!(cloud_host("http://cloud"), "cloud");
    }
}
