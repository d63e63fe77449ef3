//! The one implementation behind every validated name type: a newtype over
//! the frame's `Bytes` that can only be built through its check, compares
//! and hashes as text (so maps keyed by it can be searched with `&str`), and
//! prints as text.

macro_rules! validated_name {
    ($ty:ident, $err:ty, $check:ident) => {
        impl $ty {
            /// Validates `bytes` (shared, not copied).
            pub fn from_bytes(bytes: ::bytes::Bytes) -> Result<Self, $err> {
                $check(&bytes)?;
                Ok(Self(bytes))
            }

            /// Validates a string.
            pub fn parse(text: &str) -> Result<Self, $err> {
                Self::from_bytes(::bytes::Bytes::copy_from_slice(text.as_bytes()))
            }

            /// The name as text.
            pub fn as_str(&self) -> &str {
                // Validation admitted ASCII only, so this never falls back.
                std::str::from_utf8(&self.0).unwrap_or_default()
            }

            /// The bytes, as they travel on the wire.
            pub fn as_bytes(&self) -> &::bytes::Bytes {
                &self.0
            }
        }

        impl std::str::FromStr for $ty {
            type Err = $err;
            fn from_str(text: &str) -> Result<Self, $err> {
                Self::parse(text)
            }
        }

        impl PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                self.0 == other.0
            }
        }

        impl Eq for $ty {}

        // Hash as `str` so maps keyed by the name can be searched with `&str`.
        impl std::hash::Hash for $ty {
            fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
                self.as_str().hash(state)
            }
        }

        impl std::borrow::Borrow<str> for $ty {
            fn borrow(&self) -> &str {
                self.as_str()
            }
        }

        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{:?}", self.as_str())
            }
        }
    };
}

pub(crate) use validated_name;
