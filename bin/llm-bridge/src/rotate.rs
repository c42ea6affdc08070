//! A log file rotated by size, like Python's `RotatingFileHandler`: when the next line would
//! take the file past `max_size`, `log` becomes `log.1`, `log.1` becomes `log.2`, … and the
//! oldest beyond `backup_count` is deleted. Lines are never split across files.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// See the module docs.
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    backup_count: usize,
    /// Buffered: the background writer flushes whenever its queue is empty, so a busy
    /// gateway writes many lines per system call.
    file: BufWriter<File>,
    size: u64,
}

impl RotatingFile {
    /// Opens (appending) or creates the file and its folder.
    pub fn open(path: &Path, max_size: u64, backup_count: usize) -> io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        let file = BufWriter::with_capacity(64 * 1024, file);
        Ok(RotatingFile {
            path: path.to_path_buf(),
            max_size: max_size.max(1),
            backup_count,
            file,
            size,
        })
    }

    fn backup(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.backup_count == 0 {
            std::fs::remove_file(&self.path).or_else(ignore_missing)?;
        } else {
            std::fs::remove_file(self.backup(self.backup_count)).or_else(ignore_missing)?;
            for n in (1..self.backup_count).rev() {
                let from = self.backup(n);
                if from.exists() {
                    std::fs::rename(&from, self.backup(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.backup(1))?;
        }
        self.file = BufWriter::with_capacity(
            64 * 1024,
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?,
        );
        self.size = 0;
        Ok(())
    }
}

fn ignore_missing(e: io::Error) -> io::Result<()> {
    if e.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max_size {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_backup_count_files_of_at_most_max_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/app.log");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        for i in 0..50 {
            f.write_all(format!("line {i:03} ..........\n").as_bytes())
                .unwrap();
        }
        f.flush().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("logs"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["app.log", "app.log.1", "app.log.2"]);
        for n in &names {
            let text = std::fs::read_to_string(dir.path().join("logs").join(n)).unwrap();
            assert!(text.len() <= 100, "{n}: {} bytes", text.len());
            assert!(text.ends_with('\n'), "lines are never split");
        }
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.ends_with("line 049 ..........\n"));
        let older = std::fs::read_to_string(dir.path().join("logs/app.log.1")).unwrap();
        assert!(older.contains("line 04"));
    }
}
