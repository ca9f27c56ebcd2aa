"""Keep what you make (docs/gallery.md): creations (a result with its sketch and its parameters) in a
user's gallery, private until made public, their files in Django's storage served with the owner
check, thumbnails made once at save, and a per-user quota."""
