//! Whole-path helpers for tests, tools and benchmarks: resolve a path, create, write and read
//! whole files. Paths are relative to the session root; a leading "/" is allowed. Symlinks
//! are not followed (the helpers are for trees the caller made).

use super::{Caller, Client, NewNode};
use mfsha_proto::types::*;

impl Client {
    /// The attributes of the object at `path`.
    pub async fn resolve(&self, path: &str) -> Reply<Attr> {
        let mut attr = self.getattr(self.root()).await?;
        for name in components(path)? {
            if attr.kind != FileKind::Directory {
                return Err(Status::NotDir);
            }
            attr = self.lookup(Caller::ROOT, attr.ino, name).await?;
        }
        Ok(attr)
    }

    /// The parent directory's inode and the last name of `path`.
    pub async fn resolve_parent<'p>(&self, path: &'p str) -> Reply<(Ino, &'p str)> {
        let parts = components(path)?;
        let (last, dirs) = parts.split_last().ok_or(Status::Invalid)?;
        let mut ino = self.root();
        for name in dirs {
            let attr = self.lookup(Caller::ROOT, ino, name).await?;
            if attr.kind != FileKind::Directory {
                return Err(Status::NotDir);
            }
            ino = attr.ino;
        }
        Ok((ino, last))
    }

    /// Makes a directory and every missing parent; an existing directory is fine.
    pub async fn mkdir_all(&self, who: Caller, path: &str, mode: u32) -> Reply<Attr> {
        let mut attr = self.getattr(self.root()).await?;
        for name in components(path)? {
            attr = match self.lookup(who, attr.ino, name).await {
                Ok(found) if found.kind == FileKind::Directory => found,
                Ok(_) => return Err(Status::NotDir),
                Err(Status::NotFound) => match self.mkdir(who, attr.ino, name, mode, 0).await {
                    // Someone else made it in between: use theirs.
                    Err(Status::Exists) => self.lookup(who, attr.ino, name).await?,
                    other => other?,
                },
                Err(e) => return Err(e),
            };
        }
        Ok(attr)
    }

    /// Creates (or truncates) the file at `path`, writes `data`, and closes it, so the bytes
    /// are durable on every copy when this returns.
    pub async fn write_file(&self, who: Caller, path: &str, data: &[u8]) -> Reply<Attr> {
        let (parent, name) = self.resolve_parent(path).await?;
        let ino = match self.mknod(who, parent, name, NewNode::file(0o644)).await {
            Ok(attr) => attr.ino,
            Err(Status::Exists) => {
                let attr = self.lookup(who, parent, name).await?;
                if attr.kind != FileKind::File {
                    return Err(if attr.kind == FileKind::Directory {
                        Status::IsDir
                    } else {
                        Status::Invalid
                    });
                }
                let set = SetAttr { size: Some(0), ..Default::default() };
                self.setattr(who, attr.ino, set).await?.ino
            }
            Err(e) => return Err(e),
        };
        let (fh, _) = self.open(who, ino, libc::O_WRONLY).await?;
        let written = self.write_all_at(fh, 0, data).await;
        let closed = self.release(fh).await;
        written.and(closed)?;
        self.getattr(ino).await
    }

    async fn write_all_at(&self, fh: u64, offset: u64, data: &[u8]) -> Reply<()> {
        const STEP: usize = 1 << 20;
        for (i, piece) in data.chunks(STEP).enumerate() {
            self.write(fh, offset + (i * STEP) as u64, piece).await?;
        }
        Ok(())
    }

    /// The whole content of the file at `path`.
    pub async fn read_file(&self, path: &str) -> Reply<Vec<u8>> {
        let attr = self.resolve(path).await?;
        if attr.kind != FileKind::File {
            return Err(if attr.kind == FileKind::Directory {
                Status::IsDir
            } else {
                Status::Invalid
            });
        }
        let (fh, attr) = self.open(Caller::ROOT, attr.ino, libc::O_RDONLY).await?;
        let result = self.read_to_end(fh, attr.size).await;
        let closed = self.release(fh).await;
        let data = result?;
        closed?;
        Ok(data)
    }

    async fn read_to_end(&self, fh: u64, size_hint: u64) -> Reply<Vec<u8>> {
        const STEP: u32 = 1 << 20;
        let mut out = Vec::with_capacity(size_hint as usize);
        loop {
            let piece = self.read(fh, out.len() as u64, STEP).await?;
            if piece.is_empty() {
                return Ok(out);
            }
            out.extend_from_slice(&piece);
        }
    }

    /// Removes the file (or symlink, or device node) at `path`.
    pub async fn remove_file(&self, who: Caller, path: &str) -> Reply<()> {
        let (parent, name) = self.resolve_parent(path).await?;
        self.unlink(who, parent, name).await
    }
}

/// The names of a path, rejecting "." and ".." (the helpers do not walk up).
fn components(path: &str) -> Reply<Vec<&str>> {
    let mut out = Vec::new();
    for name in path.split('/').filter(|n| !n.is_empty()) {
        if name == "." || name == ".." {
            return Err(Status::Invalid);
        }
        if name.len() > NAME_MAX {
            return Err(Status::NameTooLong);
        }
        out.push(name);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::components;
    use mfsha_proto::types::Status;

    #[test]
    fn components_skip_empty_parts_and_refuse_dots() {
        assert_eq!(components("/a//b/c/").unwrap(), vec!["a", "b", "c"]);
        assert!(components("/").unwrap().is_empty());
        assert_eq!(components("a/../b"), Err(Status::Invalid));
        assert_eq!(components(&"x".repeat(256)), Err(Status::NameTooLong));
    }
}
