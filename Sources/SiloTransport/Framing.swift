import Foundation

/// Limits and tuning of the gRPC transport, the same on the server and its clients.
public struct NetworkSettings: Sendable, Equatable {
    /// The largest chunk of a sealed payload in one gRPC message (default 4 MiB): no message approaches
    /// gRPC's limits whatever the model size.
    public var chunkBytes: Int = 4 << 20
    /// The largest sealed payload accepted (default 1 GiB); larger announcements are refused before
    /// anything is allocated.
    public var maxPayloadBytes: Int = 1 << 30
    /// How long the server waits for a client's answer before it drops that client from the run.
    public var responseTimeout: TimeInterval = 600
    /// How long a client keeps retrying a refused TCP connection (the server may still be loading).
    public var connectTimeout: TimeInterval = 120
    /// Heartbeats: both ends send an HTTP/2 PING after this many seconds without traffic and close the
    /// connection when the answer takes as long again, so a peer that vanished (power cut, network
    /// partition) is noticed in about twice this time, not after the response timeout.
    public var heartbeat: TimeInterval = 10
    /// How long a client whose connection broke keeps trying to reconnect and rejoin (0: it gives up at once).
    public var reconnectTimeout: TimeInterval = 600
    /// HTTP/2 flow-control window (16 MiB): with the default 64 KiB a 3 MiB payload waits on
    /// WINDOW_UPDATE round trips.
    public var http2TargetWindow: Int = 16 << 20
    /// HTTP/2 max frame size (4 MiB; the default is 16 KiB).
    public var http2MaxFrame: Int = 4 << 20

    public init() {}

    /// The largest gRPC message either side accepts: one chunk and its framing.
    var maxMessageBytes: Int { chunkBytes + 4096 }
}

/// An error of the network transport, with a code for the cases a caller tells apart.
public struct TransportError: Error, CustomStringConvertible, Sendable {
    public enum Code: String, Sendable {
        /// Bytes that are not a valid frame sequence (sizes, order).
        case malformed
        /// A payload larger than ``NetworkSettings/maxPayloadBytes``.
        case tooLarge = "too large"
        /// The server refused the client (certificate, allow-list, handshake).
        case refused
        /// No answer within the timeout.
        case timeout
        /// The peer's stream ended.
        case closed
        /// No TCP connection to the server (refused, unreachable).
        case unreachable
    }

    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

/// Reassembles the chunks of sealed payloads received on a stream, checking each size before it
/// allocates: a payload is announced by its first chunk (1 … `maxPayloadBytes` bytes), arrives in
/// chunks of 1 … `chunkBytes` bytes, and ends with a chunk marked `last` exactly at its size.
public struct PayloadAssembler: Sendable {
    public let chunkBytes: Int
    public let maxPayloadBytes: Int
    /// Who sends, for errors (`client client-2`).
    public let sender: String
    private var buffer: [UInt8] = []
    private var expected: Int?

    public init(chunkBytes: Int, maxPayloadBytes: Int, sender: String) {
        self.chunkBytes = chunkBytes
        self.maxPayloadBytes = maxPayloadBytes
        self.sender = sender
    }

    /// Adds one frame; returns the payload it completes, if any.
    /// - Throws: ``TransportError`` (`malformed`, `tooLarge`) — the stream is unusable after it.
    public mutating func add(_ frame: Silo_V1_Frame) throws -> [UInt8]? {
        guard !frame.finished else { throw TransportError(.malformed, "\(sender): a 'finished' frame in a payload stream") }
        if let expected {
            guard frame.payloadBytes == 0 else {
                throw TransportError(.malformed, "\(sender): a new payload of \(frame.payloadBytes) bytes announced after \(buffer.count) of \(expected) bytes")
            }
        } else {
            guard frame.payloadBytes > 0 else { throw TransportError(.malformed, "\(sender): a payload's first chunk does not announce its size") }
            guard frame.payloadBytes <= UInt64(maxPayloadBytes) else {
                throw TransportError(.tooLarge, "\(sender): a payload of \(frame.payloadBytes) bytes exceeds the limit of \(maxPayloadBytes) bytes")
            }
            expected = Int(frame.payloadBytes)
            buffer = []
            buffer.reserveCapacity(min(Int(frame.payloadBytes), 4 * chunkBytes))
        }
        let total = expected ?? 0
        guard !frame.chunk.isEmpty, frame.chunk.count <= chunkBytes else {
            throw TransportError(.malformed, "\(sender): a chunk of \(frame.chunk.count) bytes (1 … \(chunkBytes) allowed)")
        }
        guard buffer.count + frame.chunk.count <= total else {
            throw TransportError(.malformed, "\(sender): \(buffer.count + frame.chunk.count) bytes for a payload announced as \(total) bytes")
        }
        buffer.append(contentsOf: frame.chunk)
        if frame.last {
            guard buffer.count == total else {
                throw TransportError(.malformed, "\(sender): the last chunk ends at \(buffer.count) of \(total) announced bytes")
            }
            expected = nil
            defer { buffer = [] }
            return buffer
        }
        guard buffer.count < total else {
            throw TransportError(.malformed, "\(sender): all \(total) bytes arrived but the chunk is not marked last")
        }
        return nil
    }

    /// Whether a payload is partly received.
    public var isIdle: Bool { expected == nil }

    /// The frames that carry `payload`, in order.
    public static func frames(for payload: [UInt8], chunkBytes: Int) -> [Silo_V1_Frame] {
        precondition(!payload.isEmpty && chunkBytes > 0, "frames: empty payload or chunk size \(chunkBytes)")
        var frames: [Silo_V1_Frame] = []
        var start = 0
        while start < payload.count {
            let end = min(payload.count, start + chunkBytes)
            var frame = Silo_V1_Frame()
            if start == 0 { frame.payloadBytes = UInt64(payload.count) }
            frame.chunk = Data(payload[start..<end])
            frame.last = end == payload.count
            frames.append(frame)
            start = end
        }
        return frames
    }
}
