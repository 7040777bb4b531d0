"""What every job makes of one object mesh: the six reference views O_I (``object_refs``) and the
2048 surface points P with normals (``points``), in the object's canonical frame."""
