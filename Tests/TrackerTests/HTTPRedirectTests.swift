import Metainfo
import Testing
import TrackerClient

/// Where a redirect leads (`HTTPRedirect`): relative and absolute locations resolve as RFC 3986
/// says, and what a hostile server could use (a downgrade, a bad URL) is refused with the reason.
@Suite struct HTTPRedirectTests {
    func url(_ text: String) throws -> WebSeedURL { try WebSeedURL(text) }

    @Test(arguments: [
        ("http://a.example:8080/images/v1/disk.img", "https://cdn.example/x/disk.img?sig=1", "https://cdn.example/x/disk.img?sig=1"),
        ("http://a.example:8080/images/v1/disk.img", "/store/disk.img", "http://a.example:8080/store/disk.img"),
        ("http://a.example:8080/images/v1/disk.img", "../v2/disk.img", "http://a.example:8080/images/v2/disk.img"),
        ("http://a.example/images/disk.img?old=1", "?sig=2", "http://a.example/images/disk.img?sig=2"),
        ("https://a.example/disk.img", "//b.example:8443/disk.img", "https://b.example:8443/disk.img"),
        ("http://[::1]:9000/a/b", "c#part", "http://[::1]:9000/a/c"),
    ])
    func aLocationResolvesAgainstTheURLAsked(base: String, location: String, expected: String) throws {
        let next = try HTTPRedirect.resolve(location, from: try url(base))
        let want = try url(expected)
        #expect(next.isTLS == want.isTLS && next.host == want.host && next.port == want.port)
        #expect(next.requestTarget == want.requestTarget, "\(next.text)")
    }

    @Test func aRedirectThatCouldHurtIsRefusedWithItsReason() throws {
        let secure = try url("https://a.example/disk.img")
        func refusal(_ location: String, from base: WebSeedURL) -> String? {
            do throws(HTTPGetError) {
                _ = try HTTPRedirect.resolve(location, from: base)
                return nil
            } catch {
                return "\(error)"
            }
        }
        #expect(refusal("http://a.example/disk.img", from: secure)?.contains("from https:// down to http://") == true)
        #expect(refusal("", from: secure)?.contains("empty") == true)
        #expect(refusal("ftp://a.example/disk.img", from: secure)?.contains("ftp:// is not supported") == true)
        #expect(refusal("https://user:pw@b.example/disk.img", from: secure)?.contains("user names") == true)
        #expect(refusal("https://b.example/disk.img\r\nX-Evil: 1", from: secure) != nil)
        #expect(refusal("https://b.example:99999/disk.img", from: secure)?.contains("port") == true)
        #expect(refusal(String(repeating: "a", count: 5000), from: secure)?.contains("longer than") == true)
        #expect(HTTPRedirect.statuses == [301, 302, 303, 307, 308])
    }
}
