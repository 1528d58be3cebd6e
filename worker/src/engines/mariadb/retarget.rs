//! [`Retarget`]: the filter that aims a mariadb-dump stream of one database at another (see the
//! parent module's documentation for why and what it rewrites).
//!
//! This file depends on `std` only, on purpose: the fuzz crate compiles it by path
//! (`fuzz/fuzz_targets/mariadb_retarget.rs`), which keeps ferry-worker's dependency tree out of
//! the sanitizer build. Keep crate imports out of it.

use std::io::Read;

/// A quoted identifier.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// How mysqldump locks a table around its rows, and unlocks it.
const LOCK_TABLES: &[u8] = b"LOCK TABLES `";
const UNLOCK_TABLES: &[u8] = b"UNLOCK TABLES;\n";
/// How mysqldump starts a table's definition.
const CREATE_TABLE: &[u8] = b"CREATE TABLE ";
/// How a column definition starts inside mysqldump's `CREATE TABLE`.
const COLUMN_LINE: &[u8] = b"  `";

/// Most bytes of a statement's start [`Retarget`] holds to recognise it; anything longer
/// passes through untouched.
const MAX_HEAD: usize = 4096;
/// How mysqldump starts a trigger (`/*!50003 CREATE*/ /*!50017 DEFINER=…*/ /*!50003 TRIGGER `):
/// the rest is the trigger's original statement from its name on.
const TRIGGER_LINE: &[u8] = b"/*!50003 CREATE*/";
const TRIGGER_KEYWORD: &[u8] = b"*/ /*!50003 TRIGGER ";

/// A reader over a mysqldump dump of database `from` that makes it land in `to` instead. Two
/// kinds of statement name the dumped database, and only they are rewritten:
///
/// - ``ALTER DATABASE `from` CHARACTER SET cs COLLATE cl ;`` (or `;;`), which the tool writes
///   around routines, triggers and events created under another database collation than the
///   current one;
/// - a trigger's head, ``TRIGGER [IF NOT EXISTS] [`from`.]name {BEFORE|AFTER} event ON
///   [`from`.]table``: the server keeps a trigger's original text, so a trigger created with
///   qualified names is dumped with them. (A trigger lives in its table's database, so such a
///   qualifier can only name the source.) Trigger bodies are the application's code and are left
///   alone.
///
/// mysqldump escapes line breaks inside string values, so a line that starts like these is a
/// statement of the tool's own. Memory is bounded: only a statement's start (at most
/// [`MAX_HEAD`] bytes, and only while it may still match) is buffered; everything else streams.
pub struct Retarget<R> {
    inner: R,
    from: Vec<u8>,
    to: String,
    alter: Vec<u8>,
    buf: Box<[u8]>,
    pos: usize,
    len: usize,
    eof: bool,
    /// At the start of a line, collecting it while it may still match.
    collecting: bool,
    head: Vec<u8>,
    /// Inside a `CREATE TABLE` statement (its column lines may name sequences).
    in_create_table: bool,
    /// `nextval(`from`.` and `lastval(`from`.`: a column default naming a sequence of the dumped
    /// database.
    sequence_refs: [Vec<u8>; 2],
    out: Vec<u8>,
    out_pos: usize,
}

/// What the collected start of a statement is.
enum Verdict {
    /// Not one of ours: pass it on.
    Pass,
    /// Could still be one of ours: collect more.
    More,
    /// One of ours, rewritten (the whole collected text).
    Rewritten(Vec<u8>),
}

impl<R: Read> Retarget<R> {
    /// Retargets `inner`, a dump of database `from`, to database `to`.
    pub fn new(inner: R, from: &str, to: &str) -> Self {
        Retarget {
            inner,
            from: from.as_bytes().to_vec(),
            to: to.to_owned(),
            alter: format!("ALTER DATABASE {} ", ident(from)).into_bytes(),
            buf: vec![0u8; 64 << 10].into_boxed_slice(),
            pos: 0,
            len: 0,
            eof: false,
            collecting: true,
            head: Vec::with_capacity(MAX_HEAD),
            in_create_table: false,
            sequence_refs: [
                format!("nextval({}.", ident(from)).into_bytes(),
                format!("lastval({}.", ident(from)).into_bytes(),
            ],
            out: Vec::with_capacity(MAX_HEAD),
            out_pos: 0,
        }
    }

    /// Judges the collected head.
    fn verdict(&self) -> Verdict {
        let head = &self.head[..];
        let complete_line = head.last() == Some(&b'\n');
        let starts = |pattern: &[u8]| {
            let n = head.len().min(pattern.len());
            head[..n] == pattern[..n]
        };
        // LOCK TABLES around a table's rows (left out of new dumps by --skip-add-locks): a row
        // insert whose column defaults to NEXTVAL(seq) needs the sequence locked too, which the
        // tool never does. The locks only speed up MyISAM loads.
        if starts(LOCK_TABLES) || starts(UNLOCK_TABLES) {
            if !complete_line {
                return Verdict::More;
            }
            let lock = head.starts_with(LOCK_TABLES) && head.ends_with(b" WRITE;\n");
            return if lock || head == UNLOCK_TABLES {
                Verdict::Rewritten(Vec::new())
            } else {
                Verdict::Pass
            };
        }
        // Enough of a `CREATE TABLE` line to know it is one (emit() follows the statement).
        if starts(CREATE_TABLE) && head.len() < CREATE_TABLE.len() && !complete_line {
            return Verdict::More;
        }
        if self.in_create_table && starts(COLUMN_LINE) {
            if !complete_line {
                return Verdict::More;
            }
            return match self.sequence_defaults(head) {
                Some(rewritten) => Verdict::Rewritten(rewritten),
                None => Verdict::Pass,
            };
        }
        if starts(&self.alter) {
            if head.len() < self.alter.len() || !complete_line {
                return if complete_line {
                    Verdict::Pass
                } else {
                    Verdict::More
                };
            }
            return match self.alter_database(head) {
                Some(rewritten) => Verdict::Rewritten(rewritten),
                None => Verdict::Pass,
            };
        }
        if starts(TRIGGER_LINE) {
            if head.len() < TRIGGER_LINE.len() {
                return if complete_line {
                    Verdict::Pass
                } else {
                    Verdict::More
                };
            }
            let from = TRIGGER_LINE.len() - 2;
            let Some(at) = find(&head[from..], TRIGGER_KEYWORD) else {
                // The DEFINER comment is on the trigger's first line.
                return if complete_line {
                    Verdict::Pass
                } else {
                    Verdict::More
                };
            };
            let start = from + at + TRIGGER_KEYWORD.len();
            return match trigger_head(&head[start..], &self.from) {
                Err(Stop::More) => Verdict::More,
                Err(Stop::NoMatch) => Verdict::Pass,
                Ok(spans) if spans.is_empty() => Verdict::Pass,
                Ok(spans) => {
                    let quoted = ident(&self.to);
                    let plain = !self.to.bytes().all(|b| b.is_ascii_digit())
                        && self
                            .to
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$');
                    let mut out = head[..start].to_vec();
                    let mut last = start;
                    for (a, b, bare) in spans {
                        out.extend_from_slice(&head[last..start + a]);
                        // Keep the original's style where the name allows it.
                        let name = if bare && plain { &self.to } else { &quoted };
                        out.extend_from_slice(name.as_bytes());
                        last = start + b;
                    }
                    out.extend_from_slice(&head[last..]);
                    Verdict::Rewritten(out)
                }
            };
        }
        Verdict::Pass
    }

    /// ``ALTER DATABASE `from` CHARACTER SET cs COLLATE cl ;`` (exactly as the tool writes it)
    /// aimed at `to`.
    fn alter_database(&self, line: &[u8]) -> Option<Vec<u8>> {
        let rest = line
            .strip_prefix(self.alter.as_slice())?
            .strip_suffix(b"\n")?;
        let name =
            |w: &[u8]| !w.is_empty() && w.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_');
        let words: Vec<&[u8]> = rest.split(|&b| b == b' ').collect();
        let exact = matches!(
            words[..],
            [b"CHARACTER", b"SET", cs, b"COLLATE", cl, b";" | b";;"] if name(cs) && name(cl)
        );
        if !exact {
            return None;
        }
        let mut out = format!("ALTER DATABASE {} ", ident(&self.to)).into_bytes();
        out.extend_from_slice(rest);
        out.push(b'\n');
        Some(out)
    }

    /// A column line whose default names a sequence of the dumped database
    /// (``DEFAULT nextval(`from`.`s`)``), aimed at the target's sequence.
    fn sequence_defaults(&self, line: &[u8]) -> Option<Vec<u8>> {
        if self.from == self.to.as_bytes() {
            return None;
        }
        let mut out = Vec::with_capacity(line.len() + 64);
        let mut rest = line;
        let mut changed = false;
        'scan: while !rest.is_empty() {
            for pattern in &self.sequence_refs {
                if rest.len() >= pattern.len()
                    && rest[..pattern.len()].eq_ignore_ascii_case(pattern)
                {
                    // `nextval(` / `lastval(` as written (its case kept).
                    let function = &rest[..b"nextval(".len()];
                    out.extend_from_slice(function);
                    out.extend_from_slice(ident(&self.to).as_bytes());
                    out.push(b'.');
                    rest = &rest[pattern.len()..];
                    changed = true;
                    continue 'scan;
                }
            }
            out.push(rest[0]);
            rest = &rest[1..];
        }
        changed.then_some(out)
    }

    /// Hands the collected head on, as it is or rewritten.
    fn emit(&mut self, bytes: Option<Vec<u8>>) {
        if self.head.starts_with(CREATE_TABLE) {
            self.in_create_table = true;
        } else if self.head.starts_with(b")") {
            self.in_create_table = false;
        }
        let complete_line = self.head.last() == Some(&b'\n');
        self.out.clear();
        self.out_pos = 0;
        match bytes {
            Some(bytes) => {
                self.out = bytes;
                self.head.clear();
            }
            None => std::mem::swap(&mut self.out, &mut self.head),
        }
        self.collecting = complete_line;
    }
}

impl<R: Read> Read for Retarget<R> {
    fn read(&mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        if dst.is_empty() {
            return Ok(0);
        }
        loop {
            if self.out_pos < self.out.len() {
                let n = (self.out.len() - self.out_pos).min(dst.len());
                dst[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            if self.pos == self.len {
                if self.eof {
                    if self.head.is_empty() {
                        return Ok(0);
                    }
                    // The dump ended inside a statement's start: pass it on as it is.
                    self.emit(None);
                    continue;
                }
                let n = self.inner.read(&mut self.buf)?;
                self.pos = 0;
                self.len = n;
                self.eof = n == 0;
                continue;
            }
            let avail = &self.buf[self.pos..self.len];
            let newline = avail.iter().position(|&b| b == b'\n');
            if self.collecting {
                let want = newline.map_or(avail.len(), |i| i + 1);
                let take = want.min(MAX_HEAD - self.head.len());
                self.head.extend_from_slice(&avail[..take]);
                self.pos += take;
                match self.verdict() {
                    Verdict::More if self.head.len() < MAX_HEAD => {}
                    Verdict::More | Verdict::Pass => self.emit(None),
                    Verdict::Rewritten(bytes) => self.emit(Some(bytes)),
                }
                continue;
            }
            let end = newline.map_or(avail.len(), |i| i + 1);
            let n = end.min(dst.len());
            dst[..n].copy_from_slice(&avail[..n]);
            self.pos += n;
            if newline.is_some() && n == end {
                self.collecting = true;
            }
            return Ok(n);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Why a trigger head was not (yet) parsed.
#[derive(Debug, PartialEq)]
enum Stop {
    /// The text ends before the head does.
    More,
    /// Not a head this parser understands (comments inside it, say): leave it alone.
    NoMatch,
}

/// Parses `[IF NOT EXISTS] [db.]name {BEFORE|AFTER} {INSERT|UPDATE|DELETE} ON [db.]table` and
/// returns the byte spans of the qualifiers that name `db` (ASCII case aside), and whether each
/// was bare.
fn trigger_head(text: &[u8], db: &[u8]) -> Result<Vec<(usize, usize, bool)>, Stop> {
    let mut p = HeadParser { text, at: 0 };
    let mut spans = Vec::new();
    p.space()?;
    let first = p.ident()?;
    let name_start = if first.bare && first.value.eq_ignore_ascii_case(b"IF") {
        p.keyword(&["NOT"])?;
        p.keyword(&["EXISTS"])?;
        p.space()?;
        p.ident()?
    } else {
        first
    };
    p.qualified(name_start, db, &mut spans)?;
    p.keyword(&["BEFORE", "AFTER"])?;
    p.keyword(&["INSERT", "UPDATE", "DELETE"])?;
    p.keyword(&["ON"])?;
    p.space()?;
    let table = p.ident()?;
    p.qualified(table, db, &mut spans)?;
    Ok(spans)
}

struct HeadParser<'a> {
    text: &'a [u8],
    at: usize,
}

/// An identifier of a trigger head: where it is, its unquoted value, whether it was bare.
struct Ident {
    start: usize,
    end: usize,
    value: Vec<u8>,
    bare: bool,
}

impl HeadParser<'_> {
    /// Skips white space; comments are not followed.
    fn space(&mut self) -> Result<(), Stop> {
        loop {
            match self.text.get(self.at) {
                None => return Err(Stop::More),
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.at += 1,
                Some(b'#') => return Err(Stop::NoMatch),
                Some(b'/' | b'-') if self.text.get(self.at + 1).is_none() => {
                    return Err(Stop::More);
                }
                Some(b'/') if self.text[self.at + 1] == b'*' => return Err(Stop::NoMatch),
                Some(b'-') if self.text[self.at + 1] == b'-' => return Err(Stop::NoMatch),
                Some(_) => return Ok(()),
            }
        }
    }

    /// A bare, `backticked` or "double-quoted" identifier at the cursor.
    fn ident(&mut self) -> Result<Ident, Stop> {
        let start = self.at;
        let first = *self.text.get(start).ok_or(Stop::More)?;
        if first == b'`' || first == b'"' {
            let mut value = Vec::new();
            let mut i = start + 1;
            loop {
                let b = *self.text.get(i).ok_or(Stop::More)?;
                if b == first {
                    match self.text.get(i + 1) {
                        None => return Err(Stop::More),
                        Some(&next) if next == first => {
                            value.push(first);
                            i += 2;
                        }
                        Some(_) => {
                            self.at = i + 1;
                            return Ok(Ident {
                                start,
                                end: i + 1,
                                value,
                                bare: false,
                            });
                        }
                    }
                } else {
                    value.push(b);
                    i += 1;
                }
            }
        }
        let bare = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80;
        let mut i = start;
        while let Some(&b) = self.text.get(i) {
            if !bare(b) {
                break;
            }
            i += 1;
        }
        if i == self.text.len() {
            return Err(Stop::More);
        }
        if i == start {
            return Err(Stop::NoMatch);
        }
        self.at = i;
        Ok(Ident {
            start,
            end: i,
            value: self.text[start..i].to_vec(),
            bare: true,
        })
    }

    /// One of `words` (bare, any case) after white space.
    fn keyword(&mut self, words: &[&str]) -> Result<(), Stop> {
        self.space()?;
        let word = self.ident()?;
        if word.bare
            && words
                .iter()
                .any(|w| w.as_bytes().eq_ignore_ascii_case(&word.value))
        {
            Ok(())
        } else {
            Err(Stop::NoMatch)
        }
    }

    /// `first` and, when a `.` follows, the name after it; records `first` as a qualifier span
    /// when it names `db`.
    fn qualified(
        &mut self,
        first: Ident,
        db: &[u8],
        spans: &mut Vec<(usize, usize, bool)>,
    ) -> Result<(), Stop> {
        match self.space() {
            Ok(()) if self.text[self.at] == b'.' => {}
            // A comment after a name: no qualifier follows.
            Ok(()) | Err(Stop::NoMatch) => return Ok(()),
            Err(Stop::More) => return Err(Stop::More),
        }
        self.at += 1;
        self.space()?;
        self.ident()?;
        if first.value.eq_ignore_ascii_case(db) {
            spans.push((first.start, first.end, first.bare));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader handing out at most `step` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn retarget(input: &[u8], step: usize, read_size: usize) -> Vec<u8> {
        let mut f = Retarget::new(Trickle { data: input, step }, "src", "copy");
        let mut out = Vec::new();
        let mut buf = vec![0u8; read_size];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    /// Every way of reading, from a byte at a time to all at once.
    fn assert_retargets(input: &str, expected: &str) {
        for (step, read_size) in [(1, 1), (3, 7), (100, 5), (70_000, 1 << 20), (1 << 20, 64)] {
            let out = retarget(input.as_bytes(), step, read_size);
            assert!(
                out == expected.as_bytes(),
                "step {step}, read size {read_size}:\n{}",
                String::from_utf8_lossy(&out[..out.len().min(2000)])
            );
        }
    }

    #[test]
    fn sequence_defaults_and_table_locks_are_fixed() {
        let input = "DROP SEQUENCE IF EXISTS `s`;\n\
            CREATE SEQUENCE `s` start with 100 minvalue 1 maxvalue 9223372036854775806 increment by 1 cache 1000 nocycle ENGINE=InnoDB;\n\
            DO SETVAL(`s`, 1100, 0);\n\
            CREATE TABLE `t` (\n\
            \x20 `id` bigint(20) NOT NULL DEFAULT nextval(`src`.`s`),\n\
            \x20 `last` bigint(20) DEFAULT LASTVAL(`src`.`s`),\n\
            \x20 `other` bigint(20) DEFAULT nextval(`other`.`s`),\n\
            \x20 PRIMARY KEY (`id`)\n\
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n\
            LOCK TABLES `t` WRITE;\n\
            INSERT INTO `t` VALUES (100,'  `x` nextval(`src`.`s`)');\n\
            \x20 `not` in a table nextval(`src`.`s`)\n\
            UNLOCK TABLES;\n\
            LOCK TABLES `t` READ LOCAL, `u` WRITE; -- not the tool's\n";
        let expected = "DROP SEQUENCE IF EXISTS `s`;\n\
            CREATE SEQUENCE `s` start with 100 minvalue 1 maxvalue 9223372036854775806 increment by 1 cache 1000 nocycle ENGINE=InnoDB;\n\
            DO SETVAL(`s`, 1100, 0);\n\
            CREATE TABLE `t` (\n\
            \x20 `id` bigint(20) NOT NULL DEFAULT nextval(`copy`.`s`),\n\
            \x20 `last` bigint(20) DEFAULT LASTVAL(`copy`.`s`),\n\
            \x20 `other` bigint(20) DEFAULT nextval(`other`.`s`),\n\
            \x20 PRIMARY KEY (`id`)\n\
            ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;\n\
            INSERT INTO `t` VALUES (100,'  `x` nextval(`src`.`s`)');\n\
            \x20 `not` in a table nextval(`src`.`s`)\n\
            LOCK TABLES `t` READ LOCAL, `u` WRITE; -- not the tool's\n";
        assert_retargets(input, expected);
        // In place, the locks still go and nothing else changes.
        let mut f = Retarget::new(input.as_bytes(), "src", "src");
        let mut out = String::new();
        f.read_to_string(&mut out).unwrap();
        assert!(!out.contains("LOCK TABLES `t` WRITE;"), "{out}");
        assert!(out.contains("nextval(`src`.`s`),"), "{out}");
    }

    #[test]
    fn collation_switches_are_aimed_at_the_target() {
        let long = format!("INSERT INTO `t` VALUES ('{}');\n", "x".repeat(200_000));
        let input = format!(
            "-- Host: localhost    Database: src\n\
             ALTER DATABASE `src` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci ;\n\
             {long}\
             ALTER DATABASE `src` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;;\n\
             ALTER DATABASE `src2` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\n\
             ALTER DATABASE `src` CHARACTER SET latin1 COLLATE latin1_swedish_ci ; DROP TABLE x\n\
             ALTER DATABASE `src` UPGRADE DATA DIRECTORY NAME;\n\
             \n\n{long}ALTER DATABASE `src` CHARACTER SET a COLLATE b ;"
        );
        let expected = format!(
            "-- Host: localhost    Database: src\n\
             ALTER DATABASE `copy` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci ;\n\
             {long}\
             ALTER DATABASE `copy` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;;\n\
             ALTER DATABASE `src2` CHARACTER SET latin1 COLLATE latin1_swedish_ci ;\n\
             ALTER DATABASE `src` CHARACTER SET latin1 COLLATE latin1_swedish_ci ; DROP TABLE x\n\
             ALTER DATABASE `src` UPGRADE DATA DIRECTORY NAME;\n\
             \n\n{long}ALTER DATABASE `src` CHARACTER SET a COLLATE b ;"
        );
        assert_retargets(&input, &expected);
        assert!(retarget(b"", 1, 10).is_empty());
        // Binary bytes pass untouched.
        let bytes: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
        assert_eq!(retarget(&bytes, 4096, 5000), bytes);
    }

    #[test]
    fn qualified_trigger_heads_are_aimed_at_the_target() {
        let d = "/*!50003 CREATE*/ /*!50017 DEFINER=`root`@`localhost`*/ /*!50003 TRIGGER";
        let body = format!("SET NEW.s = '{}' */;;\n", "y".repeat(10_000));
        let cases = [
            // Backticked, one line, a long body.
            (
                format!("{d} `src`.`t_bi` BEFORE INSERT ON `src`.`t` FOR EACH ROW {body}"),
                format!("{d} `copy`.`t_bi` BEFORE INSERT ON `copy`.`t` FOR EACH ROW {body}"),
            ),
            // Bare, over several lines, IF NOT EXISTS, odd case and spacing.
            (
                format!(
                    "{d} if not exists src . t_ai\n  after\n  update on\n SRC.t for each row \
                     UPDATE src.other SET n = 1 */;;\n"
                ),
                format!(
                    "{d} if not exists copy . t_ai\n  after\n  update on\n copy.t for each row \
                     UPDATE src.other SET n = 1 */;;\n"
                ),
            ),
            // Without DEFINER; only the table qualified; double quotes.
            (
                "/*!50003 CREATE*/ /*!50003 TRIGGER t_bd BEFORE DELETE ON \"src\".t FOR EACH ROW SET @x = 1 */;;\n"
                    .to_owned(),
                "/*!50003 CREATE*/ /*!50003 TRIGGER t_bd BEFORE DELETE ON `copy`.t FOR EACH ROW SET @x = 1 */;;\n"
                    .to_owned(),
            ),
        ];
        for (input, expected) in &cases {
            assert_retargets(input, expected);
        }
        // Left alone: unqualified heads, other databases, comments inside the head, and
        // anything that only looks similar.
        for same in [
            format!("{d} t_bi BEFORE INSERT ON t FOR EACH ROW {body}"),
            format!("{d} `src2`.t_bi BEFORE INSERT ON `src2`.t FOR EACH ROW SET @x = 1 */;;\n"),
            format!("{d} src.t_bi /* c */ BEFORE INSERT ON src.t FOR EACH ROW SET @x = 1 */;;\n"),
            "/*!50003 CREATE*/ something else `src`.t\n".to_owned(),
            format!("{d} `src`.`t_bi` BEFORE INSERT ON `src`.`t`"),
            format!("SELECT 1;\n{}", "z".repeat(MAX_HEAD * 3)),
        ] {
            assert_retargets(&same, &same);
        }
        // A name that cannot be bare gets quoted.
        let input = format!("{d} src.t_bi AFTER DELETE ON src.t FOR EACH ROW SET @x = 1 */;;\n");
        let mut f = Retarget::new(
            Trickle {
                data: input.as_bytes(),
                step: 5,
            },
            "src",
            "my-copy",
        );
        let mut out = String::new();
        f.read_to_string(&mut out).unwrap();
        assert_eq!(
            out,
            format!(
                "{d} `my-copy`.t_bi AFTER DELETE ON `my-copy`.t FOR EACH ROW SET @x = 1 */;;\n"
            )
        );
    }
}
