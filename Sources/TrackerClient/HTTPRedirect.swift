import Foundation
import Metainfo

/// Where an HTTP redirect leads: the pure rule behind following one. Object stores and mirrors
/// answer a web seed's or a torrent URL's request with 301/302/303/307/308 and a `Location`
/// (a signed URL on another host, a CDN edge); trackers move too. A hostile server controls the
/// header, so the rule is strict: at most `maxHops` in a row, http and https only, never from
/// https down to http, and the resolved URL is checked as strictly as a web seed's own.
public enum HTTPRedirect {
    /// The statuses that redirect (RFC 9110 15.4); 300 and 304 do not name one place to go.
    public static let statuses: Set<Int> = [301, 302, 303, 307, 308]
    /// Redirects followed in a row before the exchange fails (curl's and browsers' figures are
    /// larger; a real chain is one or two).
    public static let maxHops = 5

    /// The absolute URL `location` names, relative to `base` (RFC 3986 section 5 resolution, by
    /// Foundation's URL), checked: a `WebSeedURL` (no spaces, control bytes or user names, a
    /// valid port) and no downgrade from https to http.
    public static func resolve(_ location: String, from base: WebSeedURL) throws(HTTPGetError) -> WebSeedURL {
        let shown = WebSeedError.shown(location)
        guard !location.isEmpty, location.utf8.count <= WebSeedURL.maxLength else {
            throw .redirect(location.isEmpty ? "an empty Location" : "a Location longer than \(WebSeedURL.maxLength) bytes")
        }
        // A header value cannot hold a line break, but a parser's leniency should not be relied on.
        guard !location.utf8.contains(where: { $0 < 0x20 || $0 == 0x7f }) else { throw .redirect("a Location with control characters") }
        guard let baseURL = URL(string: base.text), let resolved = URL(string: location, relativeTo: baseURL)?.absoluteString else {
            throw .redirect("'\(shown)' is not a URL")
        }
        let next: WebSeedURL
        do throws(WebSeedError) {
            next = try WebSeedURL(resolved)
        } catch {
            throw .redirect("to \(error)")
        }
        if base.isTLS && !next.isTLS { throw .redirect("from https:// down to http:// ('\(shown)') is not followed") }
        return next
    }
}

extension WebSeedURL {
    /// `GET`'s request target: the path and the query, as written.
    public var requestTarget: String { path + (query.map { "?" + $0 } ?? "") }
}
