--- @meta
-- LuaLS annotations for file-level recovery (src/api/flr.rs): `flr{}`
-- serves a restore point's filesystems in a browser over HTTPS, on a worker
-- next to the repository or on this machine; see docs/flr.md.

--- @class skiff.FlrOpts
--- @field point string `repo:LOCATION#POINT`
--- @field password? skiff.PasswordSource a worker's session needs `{ ssm = NAME }`
--- @field account? string the repository's account
--- @field region? string the repository's region
--- @field s3_endpoint? string|table the repository's S3 endpoint (as on `repository{}`)
--- @field allow? string who may connect, a CIDR such as "203.0.113.7/32"; required on a worker
--- @field ttl? string how long the session lives: "30m", "2h" (default), at most "12h"
--- @field private? boolean launch the worker in a private subnet
--- @field local? boolean serve from this machine on 127.0.0.1 (no worker; no `allow`)
--- @field on_open? fun(s: skiff.FlrOpened) called once the session listens

--- @class skiff.FlrOpened
--- @field session string
--- @field url string `https://ADDRESS:PORT/?t=TOKEN` — give it only to who should browse
--- @field address string `https://ADDRESS:PORT/`, without the token
--- @field token string
--- @field fingerprint string SHA-256 of the certificate, `AB:CD:…`: compare with what the browser shows
--- @field spki_sha256 string SHA-256 of the certificate's public key, base64
--- @field certificate_pem string
--- @field partitions string[] one line per partition: what it is, and why not browsable when not
--- @field expires string RFC 3339

--- Something the browser served.
--- @class skiff.FlrServed
--- @field session string
--- @field action string "download", "archive", "restore" …
--- @field partition integer
--- @field paths string[]
--- @field bytes integer
--- @field outcome string
--- @field client string the browser's address
--- @field time string RFC 3339

--- @class skiff.FlrResult
--- @field why string how the session ended ("its ttl passed", "stopped (SIGINT)" …)
--- @field served skiff.FlrServed[]

--- Opens a file-level recovery session and returns when it ends.
--- @param opts skiff.FlrOpts
--- @return skiff.FlrResult
function flr(opts) end
