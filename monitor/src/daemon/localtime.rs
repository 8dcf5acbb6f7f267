//! Local time, for what the monitor prints to people (`mmm-control checks`).

/// This host's offset from UTC now, in seconds: the zone of the TZ environment or of
/// /etc/localtime, as the C library's localtime reads them; UTC when neither is readable.
pub fn utc_offset_s() -> i64 {
    let now = jiff::Timestamp::now();
    i64::from(jiff::tz::TimeZone::system().to_offset(now).seconds())
}

#[cfg(test)]
mod tests {
    /// The offset is the one the C library's localtime gives (`date +%z`, as +HHMM), in
    /// whatever zone the machine is.
    #[test]
    fn the_local_offset_is_the_c_librarys() {
        let date = || {
            let out = std::process::Command::new("date")
                .arg("+%z")
                .output()
                .expect("date");
            let z = String::from_utf8(out.stdout).expect("date prints ASCII");
            let (sign, hhmm) = z.trim().split_at(1);
            let (h, m): (i64, i64) = (hhmm[..2].parse().unwrap(), hhmm[2..].parse().unwrap());
            (h * 3600 + m * 60) * if sign == "-" { -1 } else { 1 }
        };
        assert_eq!(super::utc_offset_s(), date());
    }
}
