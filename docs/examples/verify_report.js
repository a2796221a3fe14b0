const crypto = require("node:crypto");

// The entries of a report call, or null when it is not signed by one of `secrets` or
// its timestamp is more than `toleranceS` seconds away. `rawBody`: the bytes as received.
function verifyReport(headers, rawBody, secrets, toleranceS = 300) {
  const timestamp = headers["x-mail-proxy-timestamp"];
  const offered = (headers["x-mail-proxy-signature"] || "").split(",").map((s) => s.trim());
  if (!timestamp || Math.abs(Date.now() / 1000 - Number(timestamp)) > toleranceS) return null;
  let matched = false;
  for (const secret of [].concat(secrets)) {
    const hmac = crypto.createHmac("sha256", secret).update(`${timestamp}.`).update(rawBody);
    const wanted = Buffer.from(`v1=${hmac.digest("hex")}`);
    for (const candidate of offered.map((c) => Buffer.from(c))) {
      matched ||= candidate.length === wanted.length && crypto.timingSafeEqual(candidate, wanted);
    }
  }
  return matched ? JSON.parse(rawBody).delivery_report : null;
}

module.exports = { verifyReport };
