//! A minimal MQTT client connection on raw tokio TCP and the Switchyard codec: CONNECT and
//! CONNACK, SUBSCRIBE and SUBACK, PUBLISH with QoS 1, and a cancel-safe packet reader.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use switchyard_codec::{
    ByteStr, Connect, DecodeError, Packet, Properties, ProtocolVersion, Publish, QoS, ReasonCode,
    Subscribe, Subscription, SubscriptionOptions, decode_packet, encode_packet,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest packet this client accepts from the server, in bytes. The benchmark's packets are
/// small, so anything near this is a server fault.
const MAX_INCOMING_PACKET_BYTES: u32 = 1024 * 1024;

/// Client id, credentials and protocol of one MQTT login.
#[derive(Clone, Debug)]
pub struct Login {
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub protocol: ProtocolVersion,
    /// Keep-alive interval in seconds, sent in CONNECT.
    pub keep_alive: u16,
    /// The Clean Session (3.1.1) or Clean Start (5.0) flag. With `false` a 3.1.1 session
    /// persists after the connection closes; a 5.0 session needs `session_expiry` too.
    pub clean_start: bool,
    /// The 5.0 Session Expiry Interval in seconds, or `None` to send none (0).
    pub session_expiry: Option<u32>,
}

/// Failure of a connection attempt or of an exchange.
#[derive(Debug)]
pub enum ClientError {
    /// A socket error, including a refused or reset TCP connection.
    Io(io::Error),
    /// CONNACK rejected the login with a failure reason code (in MQTT 5.0 terms).
    Refused(ReasonCode),
    /// SUBACK carried a failure code for the subscription.
    SubscriptionRejected(ReasonCode),
    /// The server sent bytes that do not decode as MQTT.
    Decode(DecodeError),
    /// The server sent a packet that does not fit the exchange, or closed the connection.
    Unexpected(String),
    /// The exchange did not finish within its deadline.
    TimedOut(&'static str),
}

impl ClientError {
    /// Reports whether retrying the same login later may succeed. A CONNACK refusal other than
    /// "server unavailable", "server busy", "quota exceeded" or "connection rate exceeded"
    /// means the login itself is wrong.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Io(_) | ClientError::TimedOut(_) | ClientError::Unexpected(_) => true,
            ClientError::Refused(code) => [
                ReasonCode::SERVER_UNAVAILABLE,
                ReasonCode::SERVER_BUSY,
                ReasonCode::QUOTA_EXCEEDED,
                ReasonCode::CONNECTION_RATE_EXCEEDED,
            ]
            .contains(code),
            ClientError::SubscriptionRejected(_) | ClientError::Decode(_) => false,
        }
    }
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // EMFILE: the process is out of file descriptors.
            ClientError::Io(error) if error.raw_os_error() == Some(24) => {
                write!(f, "{error}; raise the open-file limit with `ulimit -n`")
            }
            ClientError::Io(error) => write!(f, "{error}"),
            ClientError::Refused(code) => {
                write!(
                    f,
                    "CONNACK refused the login with reason code 0x{:02X}",
                    code.0
                )
            }
            ClientError::SubscriptionRejected(code) => {
                write!(
                    f,
                    "SUBACK rejected the subscription with code 0x{:02X}",
                    code.0
                )
            }
            ClientError::Decode(error) => write!(f, "invalid packet from the server: {error}"),
            ClientError::Unexpected(detail) => f.write_str(detail),
            ClientError::TimedOut(step) => write!(f, "timed out waiting for {step}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(error: io::Error) -> Self {
        ClientError::Io(error)
    }
}

impl From<DecodeError> for ClientError {
    fn from(error: DecodeError) -> Self {
        ClientError::Decode(error)
    }
}

/// An established MQTT connection: the socket, its read buffer and the negotiated version.
pub struct Connection {
    stream: TcpStream,
    read_buffer: BytesMut,
    write_buffer: BytesMut,
    protocol: ProtocolVersion,
    next_packet_id: u16,
    session_present: bool,
}

impl Connection {
    /// Opens a TCP connection, sends CONNECT with the login's session flags and waits for a
    /// successful CONNACK. Returns the connection and the instant the CONNACK was decoded.
    pub async fn open(
        addr: SocketAddr,
        login: &Login,
        deadline: Duration,
    ) -> Result<(Connection, Instant), ClientError> {
        tokio::time::timeout(deadline, Self::open_inner(addr, login))
            .await
            .map_err(|_| ClientError::TimedOut("CONNACK"))?
    }

    async fn open_inner(
        addr: SocketAddr,
        login: &Login,
    ) -> Result<(Connection, Instant), ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let mut connection = Connection {
            stream,
            read_buffer: BytesMut::with_capacity(1024),
            write_buffer: BytesMut::with_capacity(256),
            protocol: login.protocol,
            next_packet_id: 1,
            session_present: false,
        };
        let properties = Properties {
            session_expiry_interval: login.session_expiry,
            ..Properties::default()
        };
        let connect = Connect {
            protocol: login.protocol,
            clean_start: login.clean_start,
            keep_alive: login.keep_alive,
            client_id: ByteStr::from(login.client_id.as_str()),
            will: None,
            username: Some(ByteStr::from(login.username.as_str())),
            password: Some(Bytes::copy_from_slice(login.password.as_bytes())),
            properties,
        };
        connection.send(&Packet::Connect(Box::new(connect))).await?;
        match connection.receive().await? {
            Some(Packet::ConnAck(connack)) if connack.reason.is_error() => {
                Err(ClientError::Refused(connack.reason))
            }
            Some(Packet::ConnAck(connack)) => {
                connection.session_present = connack.session_present;
                Ok((connection, Instant::now()))
            }
            Some(Packet::Disconnect(disconnect)) => Err(ClientError::Unexpected(format!(
                "server sent DISCONNECT with reason code 0x{:02X} before CONNACK",
                disconnect.reason.0
            ))),
            Some(other) => Err(ClientError::Unexpected(format!(
                "server sent {} before CONNACK",
                other.name()
            ))),
            None => Err(ClientError::Unexpected(
                "server closed the connection before CONNACK".to_owned(),
            )),
        }
    }

    /// Reports whether the CONNACK had Session Present set, so the server resumed a stored session.
    pub fn session_present(&self) -> bool {
        self.session_present
    }

    /// Encodes and writes one packet.
    pub async fn send(&mut self, packet: &Packet) -> io::Result<()> {
        self.write_buffer.clear();
        encode_packet(packet, self.protocol, &mut self.write_buffer);
        self.stream.write_all(&self.write_buffer).await
    }

    /// Reads the next packet; returns `None` when the server closed the connection.
    ///
    /// Cancel safe: bytes read before a cancellation stay in the buffer for the next call.
    pub async fn receive(&mut self) -> Result<Option<Packet>, ClientError> {
        loop {
            let decoded = decode_packet(
                &mut self.read_buffer,
                self.protocol,
                MAX_INCOMING_PACKET_BYTES,
            )?;
            if let Some(packet) = decoded {
                return Ok(Some(packet));
            }
            if self.stream.read_buf(&mut self.read_buffer).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Subscribes to one filter and waits for its SUBACK.
    pub async fn subscribe(
        &mut self,
        filter: &str,
        qos: QoS,
        deadline: Duration,
    ) -> Result<(), ClientError> {
        let packet_id = self.allocate_packet_id();
        let subscribe = Subscribe {
            packet_id,
            subscriptions: vec![Subscription {
                filter: ByteStr::from(filter),
                options: SubscriptionOptions::with_qos(qos),
            }],
            properties: Properties::default(),
        };
        self.send(&Packet::Subscribe(subscribe)).await?;
        let wait = async {
            loop {
                match self.receive().await? {
                    Some(Packet::SubAck(suback)) if suback.packet_id == packet_id => {
                        return match suback.reasons.first() {
                            Some(code) if !code.is_error() => Ok(()),
                            Some(code) => Err(ClientError::SubscriptionRejected(*code)),
                            None => Err(ClientError::Unexpected(
                                "SUBACK carried no reason code".to_owned(),
                            )),
                        };
                    }
                    Some(packet) => self.acknowledge(&packet).await?,
                    None => {
                        return Err(ClientError::Unexpected(
                            "server closed the connection before SUBACK".to_owned(),
                        ));
                    }
                }
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .map_err(|_| ClientError::TimedOut("SUBACK"))?
    }

    /// Publishes one QoS 1 message and waits for its PUBACK. Returns the PUBACK reason code
    /// (always success for MQTT 3.1.1).
    pub async fn publish_qos1(
        &mut self,
        topic: &str,
        payload: Bytes,
        deadline: Duration,
    ) -> Result<ReasonCode, ClientError> {
        let packet_id = self.allocate_packet_id();
        let publish = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: ByteStr::from(topic),
            packet_id: Some(packet_id),
            properties: Properties::default(),
            payload,
        };
        self.send(&Packet::Publish(publish)).await?;
        let wait = async {
            loop {
                match self.receive().await? {
                    Some(Packet::PubAck(ack)) if ack.packet_id == packet_id => {
                        return Ok(ack.reason);
                    }
                    Some(Packet::Disconnect(disconnect)) => {
                        return Err(ClientError::Unexpected(format!(
                            "server sent DISCONNECT with reason code 0x{:02X} before PUBACK",
                            disconnect.reason.0
                        )));
                    }
                    Some(packet) => self.acknowledge(&packet).await?,
                    None => {
                        return Err(ClientError::Unexpected(
                            "server closed the connection before PUBACK".to_owned(),
                        ));
                    }
                }
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .map_err(|_| ClientError::TimedOut("PUBACK"))?
    }

    /// Sends the acknowledgement an incoming packet calls for: PUBACK for a QoS 1 PUBLISH,
    /// PUBREC for QoS 2 and PUBCOMP for PUBREL. Other packets need none.
    pub async fn acknowledge(&mut self, packet: &Packet) -> io::Result<()> {
        let reply = match packet {
            Packet::Publish(publish) => match (publish.qos, publish.packet_id) {
                (QoS::AtLeastOnce, Some(id)) => Packet::PubAck(switchyard_codec::Ack::new(id)),
                (QoS::ExactlyOnce, Some(id)) => Packet::PubRec(switchyard_codec::Ack::new(id)),
                _ => return Ok(()),
            },
            Packet::PubRel(ack) => Packet::PubComp(switchyard_codec::Ack::new(ack.packet_id)),
            _ => return Ok(()),
        };
        self.send(&reply).await
    }

    /// Sends DISCONNECT with reason 0x00 and closes the socket, ignoring errors because the
    /// connection is finished either way.
    pub async fn close(mut self) {
        let disconnect = switchyard_codec::Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
        let _ = self.send(&Packet::Disconnect(disconnect)).await;
        let _ = self.stream.shutdown().await;
    }

    fn allocate_packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }
}
