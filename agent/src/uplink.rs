//! The link to the cloud's MQTT broker: the outbox drained up, messages from the cloud brought
//! down, and function logs shipped best-effort.
//!
//! MQTT 5, client id = the device's name, credentials = its name and token, a persistent session
//! (clean start off, long session expiry) so messages sent down while the device is offline wait
//! for it. Up: each outbox message is published QoS 1 on `edgefn/<device>/up/<topic>` with its
//! sequence number in the user property `edgefn-id`; it leaves the outbox only when the broker
//! acknowledged it (and every message before it). Down: `edgefn/<device>/down/#`, QoS 1. After a
//! lost connection the link reconnects with exponential backoff and jitter, and sends again
//! everything unacknowledged, in order.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::{mpsc, watch};

use crate::outbox::Outbox;

/// Messages published at once and not yet acknowledged.
const WINDOW: usize = 1024;

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
}

impl BrokerAddr {
    /// Parses `mqtt://host:port`.
    pub fn parse(url: &str) -> Result<BrokerAddr, String> {
        let rest = if let Some(r) = url.strip_prefix("mqtt://") {
            r
        } else if url.starts_with("mqtts://") {
            return Err("mqtts:// (TLS) is not supported by this agent yet: use mqtt:// on a trusted network, or a TLS-terminating tunnel".into());
        } else {
            return Err(format!("`{url}` is not an mqtt:// URL"));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("`{p}` is not a port"))?),
            None => (rest, 1883),
        };
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        Ok(BrokerAddr {
            host: host.to_owned(),
            port,
        })
    }
}

/// A message that came down from the cloud: its topic without the namespace, and payload.
#[derive(Debug, Clone)]
pub struct Downlink {
    /// e.g. `commands/greet`.
    pub topic: String,
    /// Bytes.
    pub payload: Vec<u8>,
}

/// A function log line to ship.
#[derive(Debug, Clone)]
pub struct ShippedLog {
    /// Binding.
    pub binding: String,
    /// JSON payload.
    pub json: Vec<u8>,
}

/// Runs the link until `stop`.
pub async fn run(
    broker: BrokerAddr,
    device: String,
    token: String,
    outbox: Outbox,
    down: mpsc::UnboundedSender<Downlink>,
    mut logs: mpsc::Receiver<ShippedLog>,
    mut stop: watch::Receiver<bool>,
) {
    let mut attempt = 0u32;
    loop {
        let connected_once = connection(
            &broker, &device, &token, &outbox, &down, &mut logs, &mut stop,
        )
        .await;
        if *stop.borrow() {
            return;
        }
        attempt = if connected_once {
            0
        } else {
            attempt.saturating_add(1)
        };
        let wait = crate::agent::backoff(attempt);
        tracing::debug!("MQTT: reconnecting in {:.1} s", wait.as_secs_f64());
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One connection: returns when it breaks (true if it was established).
async fn connection(
    broker: &BrokerAddr,
    device: &str,
    token: &str,
    outbox: &Outbox,
    down: &mpsc::UnboundedSender<Downlink>,
    logs: &mut mpsc::Receiver<ShippedLog>,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let mut opts = MqttOptions::new(device, broker.host.clone(), broker.port);
    opts.set_credentials(device, token);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(7 * 24 * 3600));
    // Small messages must not wait for Nagle's algorithm.
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    opts.set_network_options(net);
    let (client, mut eventloop) = AsyncClient::new(opts, WINDOW * 2);
    let down_prefix = format!("edgefn/{device}/down/");
    let up_prefix = format!("edgefn/{device}/up/");
    let mut connected = false;
    // Sent, in order, waiting to learn their packet id; then by packet id.
    let mut unnamed: VecDeque<u64> = VecDeque::new();
    let mut by_pkid: HashMap<u16, u64> = HashMap::new();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    let mut in_flight: BTreeSet<u64> = BTreeSet::new();
    let mut last_sent = 0u64;
    let mut wake = tokio::time::interval(Duration::from_millis(100));
    let client = Arc::new(client);
    loop {
        // Refill the window from the outbox, in chunks.
        if connected && in_flight.len() <= WINDOW / 2 {
            match outbox.peek_after(last_sent, WINDOW - in_flight.len()).await {
                Ok(batch) => {
                    for (seq, m) in batch {
                        let props = PublishProperties {
                            user_properties: vec![("edgefn-id".into(), seq.to_string())],
                            ..PublishProperties::default()
                        };
                        if client
                            .try_publish_with_properties(
                                format!("{up_prefix}{}", m.topic),
                                QoS::AtLeastOnce,
                                false,
                                m.payload,
                                props,
                            )
                            .is_err()
                        {
                            break;
                        }
                        unnamed.push_back(seq);
                        in_flight.insert(seq);
                        last_sent = seq;
                    }
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
        tokio::select! {
            event = eventloop.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    connected = true;
                    tracing::info!("MQTT: connected to {}:{}", broker.host, broker.port);
                    if let Err(e) = client.subscribe(format!("{down_prefix}#"), QoS::AtLeastOnce).await {
                        tracing::warn!("MQTT: subscribe: {e}");
                    }
                }
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) if pkid != 0 => {
                    if let Some(seq) = unnamed.pop_front() {
                        by_pkid.insert(pkid, seq);
                    }
                }
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    if let Some(seq) = by_pkid.remove(&ack.pkid) {
                        in_flight.remove(&seq);
                        acked.insert(seq);
                        // Everything up to the oldest message still in flight is acknowledged;
                        // forget it in batches.
                        let upto = in_flight.first().map_or(last_sent, |s| s - 1);
                        let ready = acked.range(..=upto).count();
                        if ready >= 512 || (in_flight.is_empty() && ready > 0) {
                            if let Err(e) = outbox.ack(upto).await {
                                tracing::error!("{e}");
                            }
                            acked = acked.split_off(&(upto + 1));
                        }
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    if let Some(local) = topic.strip_prefix(&down_prefix) {
                        let _ = down.send(Downlink { topic: local.to_owned(), payload: p.payload.to_vec() });
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!("MQTT: connection lost: {e}");
                    } else {
                        tracing::debug!("MQTT: cannot connect: {e}");
                    }
                    return connected;
                }
            },
            () = outbox.pushed() => {}
            _ = wake.tick() => {}
            Some(log) = logs.recv(), if connected => {
                let _ = client.try_publish(format!("edgefn/{device}/logs/{}", log.binding), QoS::AtMostOnce, false, log.json);
            }
            changed = stop.changed() => {
                let stopping = changed.is_err() || *stop.borrow();
                if stopping {
                    let _ = client.disconnect().await;
                    return connected;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            BrokerAddr::parse("mqtt://cloud:1884").unwrap(),
            BrokerAddr {
                host: "cloud".into(),
                port: 1884
            }
        );
        assert_eq!(BrokerAddr::parse("mqtt://cloud").unwrap().port, 1883);
        assert!(
            BrokerAddr::parse("mqtts://cloud")
                .unwrap_err()
                .contains("TLS")
        );
        assert!(BrokerAddr::parse("http://cloud").is_err());
    }
}
