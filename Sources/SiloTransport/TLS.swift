import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import NIOCore
import NIOPosix
import NIOSSL
import NIOTLS
import X509

/// How a party protects its connection.
public enum ConnectionSecurity: Sendable {
    /// Mutual TLS 1.3 with the certificates of a ``PKI`` folder; `name` is this party's certificate
    /// (`server`, `client-2`).
    case mutualTLS(PKI, name: String)
    /// Plaintext HTTP/2: anyone on the path reads and changes the traffic's framing (the payloads stay
    /// sealed, but the sessions' identities are then self-reported). Tests and trusted networks only.
    case insecure

    var isInsecure: Bool {
        if case .insecure = self { return true }
        return false
    }
}

/// The NIOSSL configurations of both ends: TLS 1.3 only, the deployment's CA as the only trust root,
/// client certificates required by the server.
enum TLSSetup {
    static let applicationProtocols = ["grpc-exp", "h2"]

    static func serverContext(_ pki: PKI, name: String) throws -> NIOSSLContext {
        try pki.requireFiles(for: name)
        do {
            var configuration = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(pki.certificate(name).path).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: pki.key(name).path, format: .pem)))
            configuration.minimumTLSVersion = .tlsv13
            // Client certificates name organisations, not hosts: check the chain, not a host name.
            configuration.certificateVerification = .noHostnameVerification
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(pki.caCertificate.path))
            configuration.applicationProtocols = applicationProtocols
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw PKIError("TLS set-up of \(name) from \(pki.directory.path) failed: \(error)")
        }
    }

    static func clientContext(_ pki: PKI, name: String) throws -> NIOSSLContext {
        try pki.requireFiles(for: name)
        do {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv13
            configuration.certificateChain = try NIOSSLCertificate.fromPEMFile(pki.certificate(name).path).map { .certificate($0) }
            configuration.privateKey = .privateKey(try NIOSSLPrivateKey(file: pki.key(name).path, format: .pem))
            configuration.certificateVerification = .fullVerification
            configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(pki.caCertificate.path))
            configuration.applicationProtocols = applicationProtocols
            return try NIOSSLContext(configuration: configuration)
        } catch {
            throw PKIError("TLS set-up of \(name) from \(pki.directory.path) failed: \(error)")
        }
    }
}

/// What the TLS handshake proved about each open connection, by the peer address gRPC reports
/// (`ServerContext.remotePeer`), so an RPC handler knows whose certificate is on the other end.
final class PeerRegistry: @unchecked Sendable {
    struct Peer {
        var names: [String]
        var tlsVersion: TLSVersion?
    }

    private let lock = NSLock()
    private var peers: [String: Peer] = [:]

    func record(_ peer: Peer, for address: String) {
        lock.lock(); defer { lock.unlock() }
        peers[address] = peer
    }

    func remove(_ address: String) {
        lock.lock(); defer { lock.unlock() }
        peers[address] = nil
    }

    func peer(at address: String) -> Peer? {
        lock.lock(); defer { lock.unlock() }
        return peers[address]
    }

    /// The address string gRPC's NIO transport uses for `remotePeer`.
    static func key(_ address: NIOCore.SocketAddress?) -> String {
        switch address {
        case .v4(let v4)?: return "ipv4:\(v4.host):\(address?.port ?? 0)"
        case .v6(let v6)?: return "ipv6:[\(v6.host)]:\(address?.port ?? 0)"
        case .unixDomainSocket?: return "unix:\(address?.pathname ?? "")"
        case nil: return "<unknown>"
        }
    }
}

/// Sits after the TLS handler of an accepted connection: when the handshake completes, records the
/// peer certificate's names and the TLS version; forgets them when the connection closes.
final class PeerIdentityRecorder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer

    private let registry: PeerRegistry
    private var key: String?

    init(registry: PeerRegistry) {
        self.registry = registry
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event as? TLSUserEvent ?? .shutdownCompleted {
            let key = PeerRegistry.key(context.channel.remoteAddress)
            self.key = key
            var names: [String] = []
            if let certificate = try? context.pipeline.syncOperations.nioSSL_peerCertificate(),
               let bytes = try? certificate.toDERBytes(), let parsed = try? Certificate(derEncoded: bytes) {
                names = PKI.names(of: parsed)
            }
            let version = try? context.pipeline.syncOperations.nioSSL_tlsVersion()
            registry.record(PeerRegistry.Peer(names: names, tlsVersion: version ?? nil), for: key)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if let key { registry.remove(key) }
        context.fireChannelInactive()
    }
}

/// Listens on host:port and sets up each accepted connection: TLS 1.3 (mutual, the deployment's CA
/// only) and the peer recorder, then gRPC's HTTP/2 pipeline. The stock Posix transport allows TLS 1.2
/// and hides the TLS configuration; this factory keeps gRPC's pipeline and owns the TLS part.
struct SiloListenerFactory: HTTP2ServerTransport.ListenerFactory {
    let host: String
    let port: Int
    let sslContext: NIOSSLContext?
    let registry: PeerRegistry
    let log: @Sendable (String) -> Void
    var eventLoopGroup: any EventLoopGroup { MultiThreadedEventLoopGroup.singleton }

    func makeListeningChannel(
        listenerConfigurator: HTTP2ServerTransport.ListenerConfigurator,
        connectionConfigurator: HTTP2ServerTransport.ConnectionConfigurator
    ) async throws -> NIOAsyncChannel<HTTP2ServerTransport.ConnectionConfigurator.ConnectionChannel, Never> {
        let sslContext = self.sslContext
        let registry = self.registry
        let log = self.log
        return try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelInitializer { channel in listenerConfigurator.configure(channel: channel) }
            .bind(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                        try channel.pipeline.syncOperations.addHandler(PeerIdentityRecorder(registry: registry))
                        try channel.pipeline.syncOperations.addHandler(TLSFailureLogger(log: log))
                    }
                }.flatMap {
                    connectionConfigurator.configure(channel: channel, tls: sslContext == nil ? .none : .configured(requireALPN: false))
                }
            }
    }
}

/// Logs a connection whose TLS handshake fails (another CA, plaintext, garbage bytes) — one line, and
/// the connection closes; the server carries on.
final class TLSFailureLogger: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    private let log: @Sendable (String) -> Void
    private var handshakeDone = false

    init(log: @escaping @Sendable (String) -> Void) {
        self.log = log
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case TLSUserEvent.handshakeCompleted = event as? TLSUserEvent ?? .shutdownCompleted { handshakeDone = true }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !handshakeDone {
            log("refused a connection from \(PeerRegistry.key(context.channel.remoteAddress)): TLS handshake failed (\(error))")
        }
        context.fireErrorCaught(error)
    }
}

/// The gRPC client transports of a client.
enum ClientConnection {
    /// Heartbeats (``NetworkSettings/heartbeat``): HTTP/2 PINGs, also while no call is open.
    static func keepalive(_ settings: NetworkSettings) -> HTTP2ClientTransport.Config.Keepalive {
        let interval = Duration.milliseconds(Int64(settings.heartbeat * 1000))
        return .init(time: interval, timeout: interval, allowWithoutCalls: true)
    }

    static func http2(_ settings: NetworkSettings) -> HTTP2ClientTransport.Config.HTTP2 {
        var http2 = HTTP2ClientTransport.Config.HTTP2.defaults
        http2.targetWindowSize = settings.http2TargetWindow
        http2.maxFrameSize = settings.http2MaxFrame
        return http2
    }

    /// Plaintext HTTP/2 (`--insecure`).
    static func plaintext(host: String, port: Int, settings: NetworkSettings) throws -> HTTP2ClientTransport.Posix {
        try HTTP2ClientTransport.Posix(target: .dns(host: host, port: port), transportSecurity: .plaintext,
                                       config: .defaults { $0.http2 = http2(settings); $0.connection.keepalive = keepalive(settings) })
    }

    /// One TLS 1.3 connection with this party's certificate, the deployment's CA as the only root.
    static func mutualTLS(host: String, port: Int, pki: PKI, name: String, settings: NetworkSettings) async throws -> HTTP2ClientTransport.WrappedChannel {
        let context = try TLSSetup.clientContext(pki, name: name)
        // SNI and host-name verification take a name; for an IP address NIOSSL checks the
        // certificate's IP SAN against the connected address.
        let serverHostname = PKI.ipAddressBytes(host) == nil ? host : nil
        let config = HTTP2ClientTransport.WrappedChannel.Config.defaults { $0.http2 = http2(settings); $0.connection.keepalive = keepalive(settings) }
        do {
            return try await HTTP2ClientTransport.WrappedChannel.wrapping(config: config) { configure in
                try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                    .connectTimeout(.seconds(10))
                    .connect(host: host, port: port) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(NIOSSLClientHandler(context: context, serverHostname: serverHostname))
                        }.flatMap { configure(channel) }
                    }
            }
        } catch {
            throw TransportError(.unreachable, "cannot connect to \(host):\(port): \(error)")
        }
    }
}
